"""A file system that fills during a write: one ``error:`` line naming the file, the space free and
how much the artifact needed, the previous artifact intact, no temporary file left. The file
system is a small tmpfs mounted for the test (root only; skipped otherwise)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from src.app.errors import OutputError
from src.app.io_utils import atomic_path, write_json
from tests.unit.damage import run_cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
NEEDS = r"it needs more than the [\d.]+ (bytes|KB|MB) written when the space ran out"


@pytest.fixture
def small_fs(tmp_path):
    """A 256 KB tmpfs at ``tmp_path/fs``, unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "fs"
    mount.mkdir()
    cmd = ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(mount: Path, leave: int) -> None:
    """Fill ``mount`` up to ``leave`` bytes free."""
    free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
    (mount / "filler").write_bytes(b"\0" * max(0, free - leave))


def left_over(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_full_disk_keeps_the_old_file_and_says_how_much_was_needed(small_fs):
    target = small_fs / "metrics.json"
    write_json(target, {"old": 1})
    fill(small_fs, leave=8192)
    with pytest.raises(OutputError) as caught:
        write_json(target, {"values": list(range(100_000))})  # about 1 MB of JSON
    message = str(caught.value)
    assert re.search(rf"cannot write {re.escape(str(target))}: the file system is full", message)
    assert re.search(rf"\([\d.]+ (bytes|KB) free in {re.escape(str(small_fs))}\); {NEEDS}", message)
    assert "the previous version is kept" in message
    assert target.read_text().strip().replace("\n", "").replace(" ", "") == '{"old":1}'
    assert left_over(small_fs) == []


def test_a_full_disk_during_a_checkpoint_keeps_the_old_folder(small_fs):
    model = small_fs / "model"
    model.mkdir()
    (model / "weights.safetensors").write_bytes(b"old")
    fill(small_fs, leave=16384)
    from safetensors.numpy import save_file

    with (
        pytest.raises(OutputError, match=r"model: the file system is full"),
        atomic_path(model, is_dir=True) as tmp,
    ):
        save_file({"w": np.zeros(100_000, np.float32)}, str(tmp / "weights.safetensors"))
    assert (model / "weights.safetensors").read_bytes() == b"old"
    assert [p.name for p in model.iterdir()] == ["weights.safetensors"]
    assert left_over(small_fs) == []


def test_a_stage_writing_into_a_full_disk_fails_with_one_line(small_fs, work):
    """The download stage's h5ad: libhdf5 fails on close, with one ignored exception per object
    it held, and none of them reaches stderr. The datasets of the file it could not close stay
    behind, and libhdf5's exit handler would crash on them (status 139): the stage, run in a
    forked child, leaves through the CLI's own exit with status 2."""
    from src.app.core.data.synthetic import synthetic_counts

    synthetic_counts(n_cells=300, n_genes=600, seed=1).write_h5ad(work / "source.h5ad")
    out = small_fs / "out"
    out.mkdir()
    (out / "raw.h5ad").write_bytes(b"old")
    fill(small_fs, leave=32768)
    argv = ["--config", str(work / "run.yaml"), "download", "--output", str(out / "raw.h5ad")]
    env = {"APP__DATA__SOURCE": str(work / "source.h5ad")}
    status = run_cli(argv, env, work / "stderr.txt", timeout=60, own_exit=True)
    err = (work / "stderr.txt").read_text()
    assert status == "2", err
    assert err.count("\n") == 1, err
    target = re.escape(str(out / "raw.h5ad"))
    assert re.match(rf"error: cannot write {target}: the file system is full .*{NEEDS}", err), err
    assert "the previous version is kept" in err
    assert (out / "raw.h5ad").read_bytes() == b"old"
    assert left_over(out) == []
