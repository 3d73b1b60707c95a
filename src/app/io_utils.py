"""Atomic writes: a stage leaves either the old artifact or the complete new one, never half.

The temporary file (or folder) sits beside the target and carries the writer's host and process
id, so a later write of the same target removes what a killed writer left behind.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from src.app.errors import OutputError

_HOST = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname()) or "host"


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` is not thread-safe)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(path: Path) -> None:
    """Remove temporaries of ``path`` left by writers on this host that no longer run."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.{_HOST}-(\d+)\.")
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.{_HOST}-*"):
        match = pattern.match(leftover.name)
        if match and not _alive(int(match.group(1))):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    For ``is_dir=True`` the temporary path is a fresh folder that replaces ``path`` as a whole.
    The result gets the usual permissions (``0o666`` or ``0o777`` less the umask). Failing to
    create the folder or to rename raises :class:`OutputError`.
    """
    path = Path(path)
    prefix = f".{path.name}.{_HOST}-{os.getpid()}."
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(path)
        if is_dir:
            tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=prefix, suffix=path.suffix, dir=path.parent)
            os.close(fd)
            tmp = Path(name)
        tmp.chmod((0o777 if is_dir else 0o666) & ~_umask())
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        yield tmp
        try:
            if is_dir and path.exists():
                old = tmp.with_name(f"{tmp.name}.old")
                path.rename(old)
                tmp.rename(path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.replace(path)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def check_writable(*paths: str | Path) -> None:
    """Fail before any work when an output could not be written: the nearest existing folder
    above each path must be a folder this process may write to.

    Creates nothing. Raises :class:`OutputError` naming the path and the folder at fault.
    """
    for path in paths:
        folder = Path(path).absolute().parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise OutputError(f"cannot write {path}: {folder} is not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError(f"cannot write {path}: folder {folder} is not writable")
