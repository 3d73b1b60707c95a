"""Helpers of the byte-damage tests: where the parts of an HDF5 file lie, seeded damage of a few
bytes in one of them, a CLI run in a forked child, and a digest of what a run wrote."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from src.app.checksums import MAGIC, TRAILER_LEN

KINDS = ("flip", "zero", "shuffle", "random")
LENGTHS = (1, 2, 4, 16, 64)
INDEX_SIGNATURES = (b"TREE", b"HEAP", b"SNOD", b"GCOL", b"BTHD", b"BTLF", b"FRHP", b"FHDB")


def hdf5_regions(path: Path) -> dict[str, list[tuple[int, int]]]:
    """Byte ranges of ``path``: ``header`` (superblock), ``index`` (B-tree nodes, heaps, symbol
    tables), ``data`` (dataset chunks and contiguous data), ``metadata`` (the rest: object
    headers, attributes, free space) and, for a sealed file, ``seal``."""
    import h5py

    raw = path.read_bytes()
    size = len(raw)
    sealed = raw[-TRAILER_LEN:].startswith(MAGIC)
    end = size - TRAILER_LEN if sealed else size
    data: list[tuple[int, int]] = []
    with h5py.File(path, "r") as f:

        def visit(_: str, obj) -> None:
            if not isinstance(obj, h5py.Dataset) or obj.size == 0:
                return
            if obj.chunks is None:
                offset = obj.id.get_offset()
                if offset is not None:
                    data.append((offset, offset + obj.id.get_storage_size()))
            elif obj.id.get_num_chunks():
                obj.id.chunk_iter(lambda c: data.append((c.byte_offset, c.byte_offset + c.size)))

        f.visititems(visit)
    index = [
        (m.start(), min(m.start() + 128, end))
        for sig in INDEX_SIGNATURES
        for m in re.finditer(re.escape(sig), raw[:end])
    ]
    taken = np.zeros(end, dtype=bool)
    taken[:96] = True
    for lo, hi in data + index:
        taken[lo:hi] = True
    free = np.flatnonzero(~taken)
    regions = {"header": [(0, 96)], "index": index, "data": data}
    regions["metadata"] = [(int(i), int(i) + 1) for i in free[:: max(1, len(free) // 4096)]]
    if sealed:
        regions["seal"] = [(end, size)]
    return {k: v for k, v in regions.items() if v}


def byte_regions(path: Path) -> dict[str, list[tuple[int, int]]]:
    """Regions of a non-HDF5 file: a safetensors file's JSON header and its tensor data, or a
    JSON file as a whole."""
    raw = path.read_bytes()
    if path.suffix == ".safetensors":
        header = 8 + int.from_bytes(raw[:8], "little")
        return {"header": [(0, header)], "data": [(header, len(raw))]}
    return {"text": [(0, len(raw))]}


@dataclass(frozen=True)
class Damage:
    region: str
    kind: str
    offset: int
    length: int

    def __str__(self) -> str:
        return f"{self.kind} {self.length} B at {self.offset} ({self.region})"


def damage(raw: bytes, regions: dict[str, list[tuple[int, int]]], rng: random.Random, region: str):
    """``raw`` with a few bytes of one ``region`` flipped, zeroed, shuffled or randomised: (the
    damaged bytes, the Damage); at least one byte differs."""
    while True:
        lo, hi = rng.choice(regions[region])
        offset = rng.randrange(lo, max(hi, lo + 1))
        length = min(rng.choice(LENGTHS), len(raw) - offset)
        kind = rng.choice(KINDS)
        part = bytearray(raw[offset : offset + length])
        if kind == "flip":
            part = bytearray(b ^ (1 << rng.randrange(8)) for b in part)
        elif kind == "zero":
            part = bytearray(length)
        elif kind == "shuffle":
            rng.shuffle(part)
        else:
            part = bytearray(rng.randrange(256) for _ in part)
        if bytes(part) != raw[offset : offset + length]:
            out = raw[:offset] + bytes(part) + raw[offset + length :]
            return out, Damage(region, kind, offset, length)


def run_cli(
    argv: list[str], env: dict[str, str], log: Path, timeout: float = 300, *, own_exit: bool = False
) -> str:
    """``python -m src.app.cli argv`` in a forked child (imports already warm), stderr into
    ``log``: its exit status as text, 'signal N' or 'timeout'. The guard's stall limit is 5 s.
    With ``own_exit`` the child leaves through the CLI's own ``exit_process``; one that would run
    the interpreter's exit instead raises SystemExit here, whose traceback lands in ``log``."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - ends in os._exit
        code = 1
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 2)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            sys.stderr = os.fdopen(2, "w", buffering=1)
            warnings.simplefilter("ignore")  # stderr: the error line alone
            logging.getLogger().handlers = [logging.NullHandler()]
            os.environ.update(env)
            from src.app.cli import exit_process, main
            from src.app.core.data import h5_guard

            h5_guard.STALL_S = 5.0
            code = main(argv)
            if own_exit:
                exit_process(code)
        except BaseException:  # a traceback is what the test looks for
            import traceback

            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if os.WIFSIGNALED(status):
                return f"signal {os.WTERMSIG(status)}"
            return str(os.WEXITSTATUS(status))
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return "timeout"


def _h5ad_digest(path: Path) -> str:
    import anndata as ad

    adata = ad.read_h5ad(path)
    digest = hashlib.sha256()
    for name in ("obs", "var"):
        digest.update(getattr(adata, name).to_csv().encode())
    for part in (adata.X, *adata.layers.values(), *adata.obsm.values()):
        if part is not None:
            dense = part.toarray() if hasattr(part, "toarray") else np.asarray(part)
            digest.update(np.ascontiguousarray(dense).tobytes())
    digest.update(repr(sorted(adata.uns)).encode())
    return digest.hexdigest()


def result_digest(paths: list[Path]) -> dict[str, str]:
    """What a run wrote, comparable between runs: an h5ad's content, a JSON's value, history
    without its timings, other files' bytes."""
    out = {}
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if file.suffix == ".h5ad":
                out[file.name] = _h5ad_digest(file)
            elif file.name == "history.json":
                rows = json.loads(file.read_text())
                out[file.name] = repr(
                    [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
                )
            elif file.name == "SHA256SUMS" or file.suffix == ".yaml":
                continue  # lists history.json's timings; config.used.yaml names the run folder
            else:
                out[file.name] = hashlib.sha256(file.read_bytes()).hexdigest()
    return out
