"""Byte damage never takes a stage down (``src/app/core/data/h5_guard.py``): a file with a few
bytes flipped, zeroed, shuffled or randomised in its superblock, metadata, index (B-tree nodes,
heaps) or data chunks is read with the result of the undamaged file, or refused with one
``error:`` line (exit status 2) naming the file and the element, nothing written; no signal, no
traceback, no hang.

Sealed files (what the stages write) never give another result: their checksum covers every
byte. Unsealed files (anyone's h5ad) may, where the damage makes another valid file (a changed
name or count); the slow test counts those.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from src.app.checksums import TRAILER_LEN, seal, seal_status
from src.app.cli import main
from src.app.core.data.h5_guard import check_hdf5
from src.app.core.data.synthetic import synthetic_counts
from src.app.errors import DataError
from tests.unit.conftest import fails, snapshot
from tests.unit.damage import damage, hdf5_regions, result_digest

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ROOT = Path(__file__).resolve().parents[2]


def zero_a_heap_object(path: Path) -> None:
    """Zero the header of the third object of the file's first global heap collection: libhdf5
    then loops for ever when it parses the collection (an index 0, size 0 object)."""
    raw = bytearray(path.read_bytes())
    at = raw.index(b"GCOL") + 16
    for _ in range(2):
        at += 16 + (struct.unpack_from("<Q", raw, at + 8)[0] + 7) // 8 * 8
    raw[at : at + 16] = bytes(16)
    path.write_bytes(bytes(raw))


def test_a_libhdf5_hang_becomes_one_error_line(work, capsys, monkeypatch):
    """Without the guard, reading this file never returns (anndata, h5py and scanpy alike)."""
    from src.app.core.data import h5_guard

    source = work / "source.h5ad"
    synthetic_counts(n_cells=40, n_genes=200, seed=1).write_h5ad(source)
    zero_a_heap_object(source)
    monkeypatch.setattr(h5_guard, "STALL_S", 0.25)
    match = r"source\.h5ad is damaged: libhdf5 made no progress for 0\.25 s at / \(attribute 'encod"
    fails(work, ["download", "--output", "out/raw.h5ad"], match, capsys, {"APP__DATA__SOURCE": str(source)})  # fmt: skip


CRASH = """
import os, signal, sys
from src.app.core.data import h5_guard
from src.app.errors import DataError
real = h5_guard._read_dataset
def crash(ds, size):
    if ds.name == "/X/indices":
        os.kill(os.getpid(), signal.SIGSEGV)
    real(ds, size)
h5_guard._read_dataset = crash
for poisoned in (False, True):
    if poisoned:  # as numba's OpenMP pool does: a forked child is killed at once
        os.register_at_fork(after_in_child=lambda: os.kill(os.getpid(), signal.SIGTERM))
    try:
        h5_guard.check_hdf5(sys.argv[1], what="data")
        print("read")
    except DataError as exc:
        print(exc)
"""


@pytest.mark.slow  # a new interpreter that crashes libhdf5 twice
def test_a_libhdf5_crash_becomes_an_error_naming_the_element(tmp_path):
    """A segmentation fault while the child reads /X/indices is reported with that element;
    where a fork is killed by another library's handler, a fresh interpreter walks the file (so
    the crash that a monkeypatch makes in a fork does not happen there)."""
    path = tmp_path / "data.h5ad"
    synthetic_counts(n_cells=40, n_genes=200, seed=1).write_h5ad(path)
    proc = subprocess.run(
        [sys.executable, "-c", CRASH, str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    lines = proc.stdout.splitlines()
    assert lines[0] == (
        f"data {path} is damaged: libhdf5 crashed (SIGSEGV) at /X/indices; restore it or rerun "
        "the stage that writes it"
    ), proc.stdout + proc.stderr
    assert lines[1] == "read"


def test_seals_find_every_changed_byte(tmp_path):
    path = tmp_path / "x.h5ad"
    synthetic_counts(n_cells=40, n_genes=200, seed=1).write_h5ad(path)
    assert seal_status(path) == "unsealed"
    seal(path)
    seal(path)  # once only
    assert seal_status(path) == "intact"
    raw = path.read_bytes()
    for offset in (0, 100, len(raw) // 2, len(raw) - TRAILER_LEN - 1, len(raw) - 40):
        changed = bytearray(raw)
        changed[offset] ^= 0x10
        path.write_bytes(bytes(changed))
        assert seal_status(path) == "damaged", offset
        with pytest.raises(DataError, match="do not match the SHA-256 checksum"):
            check_hdf5(path, what="data")


@pytest.mark.slow  # 12 download runs through the CLI
def test_damaged_copies_read_the_same_or_fail_with_one_line(work, capsys, monkeypatch):
    """The short fuzz: 12 damaged copies (3 per region) of an unsealed h5ad through the download
    stage, in this process: the guard keeps any crash out of it. The slow test below runs
    every stage on 304 damaged files."""
    source = work / "source.h5ad"
    synthetic_counts(n_cells=40, n_genes=200, seed=1).write_h5ad(source, compression="gzip")
    argv = ["--config", str(work / "run.yaml"), "download", "--output", "out/raw.h5ad"]
    monkeypatch.setenv("APP__DATA__SOURCE", str(source))
    assert main(argv) == 0
    expected = result_digest([work / "out" / "raw.h5ad"])
    raw, regions = source.read_bytes(), hdf5_regions(source)
    outcomes = []
    for i in range(12):
        region = ("header", "metadata", "index", "data")[i % 4]
        bad, what = damage(raw, regions, random.Random(i), region)
        source.write_bytes(bad)
        (work / "out" / "raw.h5ad").write_bytes(b"old")
        before = snapshot(work / "out")
        status = main(argv)
        err = capsys.readouterr().err
        if status == 2:
            assert err.startswith("error: "), (what, err)
            assert err.count("\n") == 1, (what, err)
            assert str(source) in err, (what, err)
            assert snapshot(work / "out") == before, what
        else:
            assert status == 0, (what, err)
            assert not err, (what, err)
            assert result_digest([work / "out" / "raw.h5ad"]) == expected, what
        outcomes.append(status)
    assert 2 in outcomes


@pytest.mark.slow
def test_damaged_inputs_of_every_stage_never_crash(tmp_path):
    """24 damaged copies of each h5ad input of every stage, sealed and not (264 runs), and 10 of
    each checkpoint and JSON file (40 runs), each through the CLI in a forked child."""
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.unit.damage_run", str(tmp_path), "24", "10", "1"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=1500, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    result = json.loads((tmp_path / "results.json").read_text())
    print("damaged-file outcomes:", result["h5ad"], result["other"])
    assert not result["bad"], "\n".join(result["bad"][:10])
    assert sum(result["h5ad"].get(k, 0) for k in ("error", "same", "different")) == 264
    assert sum(result["other"].get(k, 0) for k in ("error", "same", "different")) == 40


def test_a_process_with_other_threads_walks_in_a_new_interpreter(tmp_path, monkeypatch):
    """A fork of a process that runs jax (or other threads) may deadlock: a new interpreter.
    tqdm's monitor thread (the training bar starts it) does not count."""
    import threading
    import types

    import anndata as ad
    from tqdm.std import TMonitor

    from src.app.core.data import h5_guard

    path = tmp_path / "small.h5ad"
    ad.AnnData(np.ones((3, 2), dtype=np.float32)).write_h5ad(path)
    calls = []
    real = h5_guard._guarded_walk

    def spy(where, stall_s, *, spawn=False):
        calls.append(spawn)
        return real(where, stall_s, spawn=spawn)

    monkeypatch.setattr(h5_guard, "_guarded_walk", spy)
    monkeypatch.delitem(sys.modules, "jax", raising=False)
    this = threading.current_thread()
    for thread in (TMonitor.__new__(TMonitor), threading.Thread(target=print)):
        monkeypatch.setattr(h5_guard.threading, "enumerate", lambda t=thread: [this, t])
        assert h5_guard._walk_outside(path, 30.0)[1] == "ok"
    monkeypatch.setattr(h5_guard.threading, "enumerate", lambda: [this])
    monkeypatch.setitem(sys.modules, "jax", types.ModuleType("jax"))
    assert h5_guard._walk_outside(path, 30.0)[1] == "ok"
    assert calls == [False, True, True]
