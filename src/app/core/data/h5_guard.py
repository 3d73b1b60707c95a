"""Byte damage in an HDF5 input (.h5ad, 10x .h5) ends in a DataError, never in a dead process.

libhdf5 trusts the structure it reads: damaged metadata can make it loop for ever (a zeroed
object header in a global heap collection does, at the first string it reads from there) or crash
(a segmentation fault). So before a stage reads a file (:func:`check_hdf5`):

1. a sealed file (every .h5ad a stage writes, see ``src/app/checksums.py``) must match its
   SHA-256; an intact one holds the very bytes libhdf5 wrote and needs nothing more;
2. an unsealed file (anyone's) must carry an HDF5 signature and a superblock whose end of file
   the file reaches (checked here: garbage and truncated files need no child), and then a forked
   child walks the structure the readers will walk: every group, link, attribute, datatype,
   filter pipeline and chunk index (each chunk inside the file), the string and other
   non-numeric datasets whole (they live in the global heap), one element at each end of every
   numeric one. A crash or a hang (no progress for ``STALL_S`` seconds) costs the child only;
   the parent names the element the child was at. O(metadata + strings), not O(data).

The stage then reads in process; what the walk did not read are numeric chunks, which fail with
an exception (zlib checks each compressed chunk), not a crash, and the readers check sparse index
arrays (``h5ad.check_sparse``) before scipy uses them. A process whose forks are killed at once
(numba's OpenMP pool does that to the children of a process that used it) walks in a new
interpreter instead; where there is no ``os.fork`` at all, in process (no protection from a crash,
the same messages otherwise).
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from src.app.checksums import seal_status
from src.app.errors import DataError

STALL_S = 30.0  # seconds without progress after which the walk counts as hung
MAX_DEPTH = 32  # groups nested deeper than an h5ad ever nests them
SMALL_BYTES = 1 << 20  # numeric datasets up to this size are read whole by the walk
SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _superblock_problem(path: Path) -> str | None:
    """What makes ``path`` no HDF5 file at all, or a truncated one, read from its superblock in
    process (no child is needed to refuse those); None when it may be fine."""
    import struct

    size = path.stat().st_size
    with path.open("rb") as fh:
        start = 0
        while start + 64 <= size:  # the signature sits at 0, 512, 1024, 2048, ...
            fh.seek(start)
            head = fh.read(64)
            if head[:8] == SIGNATURE:
                break
            start = 512 if start == 0 else start * 2
        else:
            return "OSError: not an HDF5 file (no HDF5 signature)"
    version = head[8]
    offsets = head[13] if version in (0, 1) else head[9]
    if offsets != 8 or version > 3:
        return None  # unusual layouts: left to the walk
    at = {0: 24, 1: 28}.get(version, 12)
    base, _, eof = struct.unpack_from("<QQQ", head, at)
    if base + eof > size:
        return f"OSError: truncated file: {size} bytes of the {base + eof} it claims"
    return None


def _read_attrs(node: Any, name: str, say: Callable[[str], None]) -> None:
    for key in list(node.attrs):
        say(f"{name} (attribute {key!r})")
        node.attrs[key]


def _check_storage(ds: Any, size: int) -> None:
    """Every chunk (or the contiguous block) of ``ds`` inside the file."""

    def check(offset: int | None, nbytes: int) -> None:
        if offset is not None and offset + nbytes > size:
            raise ValueError(f"its data ({nbytes} bytes at {offset}) lies past the end of file")

    plist = ds.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        plist.get_filter(i)
    if ds.chunks is None:
        check(ds.id.get_offset(), ds.id.get_storage_size())
    elif ds.id.get_num_chunks():
        ds.id.chunk_iter(lambda info: check(info.byte_offset, info.size))


def _read_dataset(ds: Any, size: int) -> None:
    import numpy as np

    _check_storage(ds, size)
    if ds.size == 0:
        return
    numeric = ds.dtype.kind in "biuf" and ds.dtype.fields is None
    if numeric and ds.shape and ds.dtype.itemsize * ds.size > SMALL_BYTES:
        ds[(0,) * ds.ndim]
        ds[tuple(n - 1 for n in ds.shape)]
    else:
        np.asarray(ds[()])


def _visit(node: Any, name: str, say: Callable[[str], None], state: dict) -> None:
    import h5py

    _read_attrs(node, name, say)
    if isinstance(node, h5py.Dataset):
        _read_dataset(node, state["size"])
        return
    if name.count("/") > MAX_DEPTH:
        raise ValueError(f"groups nested more than {MAX_DEPTH} deep")
    if node.id in state["seen"]:  # a group reached twice (a loop of links): walked once
        return
    state["seen"].add(node.id)
    for key in list(node):
        child = f"{name.rstrip('/')}/{key}"
        say(child)
        link = node.get(key, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            raise ValueError(f"an external link to {link.filename} (an h5ad holds none)")
        _visit(node[key], child, say, state)


def walk(path: str | Path, say: Callable[[str], None] = lambda _: None) -> None:
    """Touch every structure of the HDF5 file ``path`` that a reader may touch; ``say`` hears the
    name of each element before it is read. Raises what h5py raises on damage."""
    import h5py

    say("/")
    with h5py.File(path, "r") as f:
        _visit(f, "/", say, {"size": Path(path).stat().st_size, "seen": set()})


def _clean(text: str) -> str:
    """One printable line of at most 300 characters (names in a damaged file may hold anything)."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= 300 else text[:297] + "..."


def _child(path: str | Path, fd: int) -> None:
    """The walk in a child process, reporting to ``fd``: 'N<element>' before each element,
    'E<error>' on failure; it ends the process."""

    def say(element: str) -> None:
        os.write(fd, b"N" + _clean(element).encode() + b"\n")

    code = 0
    try:
        walk(path, say)
    except BaseException as exc:  # every failure goes to the parent
        os.write(fd, b"E" + _clean(f"{type(exc).__name__}: {exc}").encode() + b"\n")
        code = 1
    os._exit(code)


def _follow(pid: int, fd: int, stall_s: float) -> tuple[str, str, str]:
    """Read the child's reports until it exits: (last element, outcome, detail); the outcome is
    'ok', 'error' (detail: the exception), 'crashed' (detail: the signal), 'hung' (no progress
    for ``stall_s`` seconds: the child is then killed) or 'unstarted' (it died before its first
    report: a library's fork handler killed it)."""
    element, error, pending, heard = "/", "", b"", False
    while True:
        ready, _, _ = select.select([fd], [], [], stall_s)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return element, "hung", f"made no progress for {stall_s:g} s"
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        heard = True
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            text = line[1:].decode(errors="replace")
            if line[:1] == b"N":
                element = text
            else:
                error = text
    status = os.waitpid(pid, 0)[1]
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        return element, "crashed" if heard else "unstarted", f"crashed ({name})"
    if error or os.WEXITSTATUS(status) != 0:
        return element, "error", error or f"the check exited with {os.WEXITSTATUS(status)}"
    return element, "ok", ""


# the walk in a fresh interpreter, for a process that cannot fork (numba's OpenMP pool kills
# the child of a process that has used it)
_SPAWNED = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from src.app.core.data.h5_guard import _child; _child(sys.argv[2], 1)"
)


def _guarded_walk(path: Path, stall_s: float, *, spawn: bool = False) -> tuple[str, str, str]:
    """Walk ``path`` in a forked child (or, with ``spawn``, a new interpreter); see
    :func:`_follow`."""
    read_fd, write_fd = os.pipe()
    if spawn:
        root = str(Path(__file__).resolve().parents[4])
        argv = [sys.executable, "-c", _SPAWNED, root, str(path)]
        actions = [(os.POSIX_SPAWN_DUP2, write_fd, 1), (os.POSIX_SPAWN_CLOSE, read_fd)]
        pid = os.posix_spawn(sys.executable, argv, os.environ, file_actions=actions)
    else:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child ends in os._exit
            os.close(read_fd)
            _child(path, write_fd)
    os.close(write_fd)
    try:
        return _follow(pid, read_fd, stall_s)
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    finally:
        os.close(read_fd)


def _lock_holding_threads() -> bool:
    """Whether a thread other than this one may hold a lock the forked walk needs. tqdm's
    monitor (started by the training bar) only sleeps and takes tqdm's own lock, which the walk
    never touches, so it does not count: a forked walk costs about 20 ms, a new interpreter
    about 100 ms."""
    this = threading.current_thread()
    return any(
        thread is not this and type(thread).__name__ != "TMonitor"
        for thread in threading.enumerate()
    )


def _walk_outside(path: Path, stall_s: float) -> tuple[str, str, str]:
    """The walk where a crash cannot reach this process: a forked child, else a new
    interpreter, else (no fork on this system) here."""
    if not hasattr(os, "fork"):
        reached = ["/"]
        try:
            walk(path, reached.append)
        except Exception as exc:
            return reached[-1], "error", f"{type(exc).__name__}: {exc}"
        return reached[-1], "ok", ""
    # a fork copies no other thread, so a lock one of them holds stays held in the child: where
    # this process runs other threads (python's, or jax's runtime) a new interpreter is safer
    if _lock_holding_threads() or "jax" in sys.modules:
        return _guarded_walk(path, stall_s, spawn=True)
    found = _guarded_walk(path, stall_s)
    if found[1] == "unstarted":
        found = _guarded_walk(path, stall_s, spawn=True)
    return found


def check_hdf5(
    path: str | Path,
    *,
    what: str,
    expected: str = "a complete .h5ad file",
    stall_s: float | None = None,
) -> None:
    """Refuse a damaged HDF5 file ``path`` with a DataError naming it and the element at fault:
    a seal that does not match, an element that fails, crashes libhdf5 or makes it hang (no
    progress for ``stall_s`` seconds, default ``STALL_S``)."""
    path = Path(path)
    stall_s = STALL_S if stall_s is None else stall_s
    try:
        seal = seal_status(path)
        problem = None if seal != "unsealed" else _superblock_problem(path)
    except OSError as exc:
        raise DataError(f"{what} {path} could not be read ({exc.strerror or exc})") from None
    if seal == "damaged":
        raise DataError(
            f"{what} {path} is damaged: its bytes do not match the SHA-256 checksum written "
            "with it; restore it or rerun the stage that writes it"
        )
    if seal == "intact":  # the very bytes libhdf5 wrote: nothing to walk
        return
    if problem is not None:
        raise DataError(f"{what} {path} could not be read ({problem}); is it {expected}?")
    import h5py  # noqa: F401 - once here, not in every child

    element, outcome, detail = _walk_outside(path, stall_s)
    at = f" at {element}" if element != "/" else ""
    if outcome in ("crashed", "hung"):
        raise DataError(
            f"{what} {path} is damaged: libhdf5 {detail}{at}; restore it or rerun the stage "
            "that writes it"
        )
    if outcome == "error":
        raise DataError(f"{what} {path} could not be read ({detail}){at}; is it {expected}?")
    if outcome != "ok":
        raise DataError(f"{what} {path} could not be checked: the checking process {detail}")
