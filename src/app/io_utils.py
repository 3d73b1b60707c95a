"""Atomic writes: a stage leaves either the old artifact or the complete new one, never half.

The temporary file (or folder) sits beside the target and carries the writer's host and process
id, so a later write of the same target removes what a killed writer left behind. Each artifact
gets its checksum before it is renamed into place (``src/app/checksums.py``): an ``.h5ad`` a seal,
a folder ``SHA256SUMS``. A full disk is an OutputError that names the file and the space.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from src.app.checksums import seal, write_manifest
from src.app.errors import OutputError

SEALED_SUFFIXES = (".h5ad",)
_FULL = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXT = ("No space left on device", "Disk quota exceeded", "errno = 28", "os error 28")

log = logging.getLogger(__name__)

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


def pid_alive(pid: int) -> bool:
    """Whether a process of this host with ``pid`` runs (one we may not signal counts)."""
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
        if match and not pid_alive(int(match.group(1))):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it came from) says the file system is full: h5py and
    safetensors report it in their message only."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in _FULL:
            return True
        if any(text in str(exc) for text in _FULL_TEXT):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _written_bytes(tmp: Path) -> int:
    """How far the writer got: the logical size (an HDF5 writer leaves holes where it failed)."""
    with contextlib.suppress(OSError):
        if tmp.is_dir():
            return sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
        return tmp.stat().st_size
    return 0


def full_disk_error(path: Path, written: int) -> OutputError:
    """The OutputError of a write of ``path`` that filled the disk after ``written`` bytes."""
    free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
    kept = "the previous version is kept" if path.exists() else "nothing was written"
    return OutputError(
        f"cannot write {path}: the file system is full ({_size(free)} free in {path.parent}); "
        f"it needs more than the {_size(written)} written when the space ran out; {kept}; "
        "free some space and rerun"
    )


def _finish(tmp: Path, path: Path, *, is_dir: bool, checksum: bool) -> None:
    """Checksum ``tmp`` and rename it onto ``path``."""
    if checksum and is_dir:
        write_manifest(tmp)
    elif checksum and path.suffix in SEALED_SUFFIXES:
        seal(tmp)
    if is_dir and path.exists():
        old = tmp.with_name(f"{tmp.name}.old")
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.replace(path)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, is_dir: bool = False, checksum: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    For ``is_dir=True`` the temporary path is a fresh folder that replaces ``path`` as a whole.
    The result gets the usual permissions (``0o666`` or ``0o777`` less the umask) and, with
    ``checksum``, its checksum: a seal for an ``.h5ad``, ``SHA256SUMS`` in a folder. Failing to
    create the folder or to rename, or a full disk, raises :class:`OutputError`; the temporary
    path is removed whatever happens.
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
        if disk_full(exc):
            raise full_disk_error(path, 0) from None
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        try:
            yield tmp
        except Exception as exc:
            if disk_full(exc):
                raise full_disk_error(path, _written_bytes(tmp)) from None
            raise
        try:
            _finish(tmp, path, is_dir=is_dir, checksum=checksum)
        except OSError as exc:
            if disk_full(exc):
                raise full_disk_error(path, _written_bytes(tmp)) from None
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_files(folder: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``folder``; when the block succeeds its files move into
    ``folder`` (each by a rename; other files of ``folder`` stay), else none does."""
    folder = Path(folder)
    prefix = f".{folder.name}.{_HOST}-{os.getpid()}."
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(folder)
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=folder.parent))
    except OSError as exc:
        raise OutputError(f"cannot write {folder}: {exc.strerror or exc}") from None
    try:
        yield tmp
        try:
            folder.mkdir(exist_ok=True)
            for staged in sorted(tmp.iterdir()):
                staged.replace(folder / staged.name)
        except OSError as exc:
            raise OutputError(f"cannot write {folder}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def quiet_ignored_exceptions() -> Iterator[None]:
    """Exceptions Python can only ignore go to the debug log, not as tracebacks to stderr, while
    the block runs: h5py closing a file on a full disk raises one per object it held, printed
    through both ``sys.unraisablehook`` and ``sys.excepthook``."""
    previous = sys.unraisablehook, sys.excepthook

    def unraisable(info) -> None:
        log.debug("ignored in %r: %r", info.object, info.exc_value)

    def printed(kind, value, _tb) -> None:
        log.debug("ignored: %s: %s", kind.__name__, value)

    sys.unraisablehook, sys.excepthook = unraisable, printed
    try:
        yield
    finally:
        sys.unraisablehook, sys.excepthook = previous


def hdf5_half_closed() -> bool:
    """Whether libhdf5 still holds objects of a file it failed to close (h5py closing an h5ad on
    a full disk): the file is gone and its datasets are not, and libhdf5's own exit handler then
    crashes on them (a segfault in ``H5D_close``), so the process has to leave without it."""
    h5py = sys.modules.get("h5py")
    if h5py is None:
        return False
    ids = h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_ALL)
    return bool(ids) and not any(isinstance(i, h5py.h5f.FileID) for i in ids)


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


def check_inside(path: str | Path, root: str | Path, *, key: str) -> None:
    """Refuse an output ``path`` that lies under ``root`` (config key ``key``) but leads out of
    it through a symbolic link on the way; ``root`` itself may be a link."""
    root_abs = Path(os.path.normpath(Path(root).absolute()))
    target = Path(os.path.normpath(Path(path).absolute()))
    if not target.is_relative_to(root_abs):
        return
    real_root = root_abs.resolve()
    current = root_abs
    for part in target.relative_to(root_abs).parts:
        current = current / part
        if current.is_symlink() and not current.resolve().is_relative_to(real_root):
            raise OutputError(
                f"refusing to write {path}: {current} is a symbolic link to "
                f"{current.resolve()}, outside {key} ({root}); remove the link or write elsewhere"
            )


def check_outputs(paths: list[Path], roots: dict[str, str | Path | None]) -> None:
    """Fail closed before any work: every output writable (:func:`check_writable`), none led
    out of its root (config key -> folder; None: no such root) through a symbolic link."""
    check_writable(*paths)
    for path in paths:
        for key, root in roots.items():
            if root is not None:
                check_inside(path, root, key=key)
