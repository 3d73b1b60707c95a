"""One writer per run folder: a lock file beside the folder (``results/.<run_id>.lock``), held
with ``flock`` and naming its owner (host, PID, start time, command).

``flock`` is released by the kernel when its holder dies however it dies, so a lock left by a
killed run is stale by construction: the next run takes it over (and logs whose it was). A
Snakemake run takes the locks of all its run folders before its first job (``onstart`` in
``workflow/rules/common.smk``) and passes its token to its jobs in ``CELLVAE_LOCK_TOKEN``; a CLI
stage that finds its folder locked under that token is one of those jobs and goes on.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import logging
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from src.app.errors import OutputError
from src.app.io_utils import pid_alive

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locking
    fcntl = None

log = logging.getLogger(__name__)

TOKEN_ENV = "CELLVAE_LOCK_TOKEN"  # noqa: S105 - a variable name, no secret
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def lock_path(folder: str | Path) -> Path:
    """The lock file of ``folder``: hidden, beside it (the folder's content stays the run's)."""
    folder = Path(os.path.normpath(Path(folder).absolute()))
    return folder.with_name(f".{folder.name}.lock")


def written_folder(folder: str | Path, written: list[Path]) -> Path | None:
    """``folder`` where one of the ``written`` paths lies in it (it is then to lock), else None."""
    folder = Path(os.path.normpath(Path(folder).absolute()))
    inside = (Path(os.path.normpath(Path(p).absolute())).is_relative_to(folder) for p in written)
    return folder if any(inside) else None


@dataclass
class HeldLock:
    """A lock this process holds (``fd`` open) or joined (``fd`` None: its workflow holds it)."""

    path: Path
    fd: int | None

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self.fd)
        self.fd = None


def _owner(text: str) -> dict:
    with contextlib.suppress(ValueError):
        data = json.loads(text)
        if isinstance(data, dict):
            return data
    return {}


def _describe(owner: dict) -> str:
    if not owner:
        return "another run (owner unknown)"
    command = owner.get("command", "?")
    return (
        f"another run (PID {owner.get('pid')} on {owner.get('host')}, since "
        f"{owner.get('since')}: {command})"
    )


def _refuse(folder: Path, path: Path, owner: dict) -> OutputError:
    return OutputError(
        f"{folder} is in use by {_describe(owner)}, which holds {path}; wait for it to finish "
        "or write elsewhere (--output_dir, run_id); a lock whose owner died is cleared by itself"
    )


def _read(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 1 << 16).decode(errors="replace")


def _record(token: str) -> str:
    return json.dumps(
        {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)[:300],
            "token": token,
        }
    )


def _try_flock(fd: int) -> str:
    """'got' the lock, 'held' by another, or 'unsupported' by this file system."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return "held"
    except OSError as exc:
        if exc.errno not in _NO_FLOCK:
            raise
        return "unsupported"
    return "got"


def _alive(owner: dict) -> bool:
    """Whether the process of an owner record may still run (on another host: assume it does);
    used only where the file system has no ``flock``."""
    if owner.get("host") != socket.gethostname():
        return bool(owner)
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    return pid_alive(pid)


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (a releasing owner unlinks it)."""
    try:
        return path.stat().st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def acquire(folder: str | Path, *, token: str | None = None) -> HeldLock:
    """Take the lock of ``folder``, or join it where it is held under this process's
    ``CELLVAE_LOCK_TOKEN``; an OutputError naming the owner where another run holds it."""
    folder = Path(folder)
    path = lock_path(folder)
    inherited = os.environ.get(TOKEN_ENV)
    for _ in range(5):  # a retry only when the owner released the file while we opened it
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot lock {folder}: {path}: {exc.strerror or exc}") from None
        state = _try_flock(fd)
        owner = _owner(_read(fd))
        if state == "held" or (state == "unsupported" and _alive(owner)):
            os.close(fd)
            if inherited and owner.get("token") == inherited:
                return HeldLock(path, None)
            raise _refuse(folder, path, owner)
        if not _same_file(fd, path):
            os.close(fd)
            continue
        if owner:
            log.warning("cleared the stale lock %s of %s, which has ended", path, _describe(owner))
        os.ftruncate(fd, 0)
        os.write(fd, _record(token or uuid.uuid4().hex).encode())
        return HeldLock(path, fd)
    raise OutputError(f"cannot lock {folder}: {path} keeps being replaced")


def acquire_all(folders: list[Path], *, token: str | None = None) -> list[HeldLock]:
    """The locks of every folder, or none (an error releases those already taken)."""
    unique = {lock_path(f): Path(f) for f in folders}
    held: list[HeldLock] = []
    try:
        for path in sorted(unique):
            held.append(acquire(unique[path], token=token))  # noqa: PERF401 - kept on failure
    except BaseException:
        for lock in held:
            lock.release()
        raise
    return held


@contextlib.contextmanager
def folder_lock(folder: str | Path | None) -> Iterator[HeldLock | None]:
    """Hold the lock of ``folder`` (None: no folder, no lock) for the block."""
    if folder is None or fcntl is None:
        yield None
        return
    lock = acquire(folder)
    try:
        yield lock
    finally:
        lock.release()


def lock_workflow(folders: list[Path]) -> list[HeldLock]:
    """A workflow's locks on its run folders, held until the process ends; its jobs inherit the
    token through the environment and join them."""
    if fcntl is None:
        return []
    token = uuid.uuid4().hex
    held = acquire_all(folders, token=token)
    os.environ[TOKEN_ENV] = token
    return held
