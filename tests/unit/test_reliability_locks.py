"""Two runs on one results folder, symbolic links out of ``paths.results`` and read-only inputs.

A run folder has one writer: a CLI run (and a Snakemake run, before its first job) holds
``.<folder>.lock`` beside it with ``flock``; a second run is refused with one line naming the
owner, a lock whose owner died is taken over, and a workflow's own jobs join its lock.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from src.app.cli import main
from src.app.locks import TOKEN_ENV, acquire, lock_path
from tests.unit.conftest import fails, snapshot

ROOT = Path(__file__).resolve().parents[2]
HOLD = """
import os, sys, time
from src.app.locks import acquire
lock = acquire(sys.argv[1], token=os.environ.get("CELLVAE_LOCK_TOKEN"))
print("held", flush=True)
time.sleep(120)
"""


def holder(folder: Path, env: dict | None = None) -> subprocess.Popen:
    """Another process holding the lock of ``folder`` (stopped by the caller)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "held"
    return proc


def write_config(work: Path) -> list[str]:
    return ["--config", str(work / "run.yaml"), "write-config", "--output_dir", "out"]


def test_a_second_run_into_one_output_dir_is_refused_until_the_first_ends(work, capsys, caplog):
    proc = holder(work / "out")
    try:
        match = (
            rf"out is in use by another run \(PID {proc.pid} on {re.escape(socket.gethostname())}"
        )
        fails(work, write_config(work)[2:], match, capsys)
    finally:
        proc.send_signal(signal.SIGKILL)  # dies holding the lock: the kernel releases it
        proc.wait()
    assert json.loads(lock_path(work / "out").read_text())["pid"] == proc.pid  # stale, left
    with caplog.at_level("WARNING"):
        assert main(write_config(work)) == 0
    assert f"cleared the stale lock {lock_path(work / 'out')}" in caplog.text
    assert (work / "out" / "config.used.yaml").exists()
    assert not lock_path(work / "out").exists()  # released by the run that took it


def test_a_workflow_job_joins_its_workflow_lock(work, monkeypatch):
    """A Snakemake run holds its run folders' locks under a token its jobs inherit."""
    proc = holder(work / "out", {TOKEN_ENV: "token-of-the-run"})
    try:
        monkeypatch.setenv(TOKEN_ENV, "token-of-the-run")
        held = acquire(work / "out")
        assert held.fd is None  # joined, not taken
        assert main(write_config(work)) == 0
    finally:
        proc.kill()
        proc.wait()


def test_locks_hold_between_processes_and_name_the_owner(tmp_path):
    folder = tmp_path / "results" / "run"
    lock = acquire(folder)
    try:
        owner = json.loads(lock_path(folder).read_text())
        assert owner["pid"] == os.getpid()
        assert owner["host"] == socket.gethostname()
        probe = f"from src.app.locks import acquire; acquire({str(folder)!r})"
        proc = subprocess.run(
            [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=False
        )
        assert proc.returncode == 1
        assert f"is in use by another run (PID {os.getpid()}" in proc.stderr
    finally:
        lock.release()
    assert not lock_path(folder).exists()


def test_an_output_through_a_symlink_out_of_results_is_refused(work, capsys, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (work / "results").mkdir()
    (work / "results" / "rel").symlink_to(outside, target_is_directory=True)
    match = r"refusing to write .*results/rel/config\.used\.yaml: .*results/rel is a symbolic link to .*, outside paths\.results"
    fails(work, ["write-config"], match, capsys)
    assert not list(outside.iterdir())
    (work / "results" / "rel").unlink()
    (work / "results" / "inside").mkdir()
    (work / "results" / "rel").symlink_to(work / "results" / "inside")  # a link within: fine
    assert main(["--config", str(work / "run.yaml"), "write-config"]) == 0
    assert (work / "results" / "inside" / "config.used.yaml").exists()


def test_an_output_dir_with_a_link_out_of_it_is_refused(work, capsys, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    shutil.rmtree(work / "out" / "model")
    (work / "out" / "model").symlink_to(outside, target_is_directory=True)
    argv = ["train", "--input", "pre.h5ad", "--model_dir", "out/model", "--output_dir", "out"]
    fails(work, argv, r"out/model is a symbolic link to .*, outside --output_dir", capsys)


def read_only(folder: Path) -> None:
    """Make ``folder`` read-only: a read-only bind mount where root (root ignores modes), else
    modes."""
    if os.geteuid() == 0:
        subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
        return
    for path in folder.rglob("*"):
        path.chmod(0o555 if path.is_dir() else 0o444)
    folder.chmod(0o555)


@pytest.fixture
def ro_inputs(tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    yield folder
    if os.geteuid() == 0:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_inputs_are_opened_read_only(work, ro_inputs, monkeypatch):
    """download and preprocess read from a read-only folder, which stays as it was (the slow
    test below runs every stage so)."""
    from src.app.core.data.synthetic import synthetic_counts

    synthetic_counts(n_cells=120, n_genes=300, seed=3).write_h5ad(ro_inputs / "source.h5ad")
    read_only(ro_inputs)
    before = snapshot(ro_inputs)
    config = ["--config", str(work / "run.yaml")]
    monkeypatch.setenv("APP__DATA__SOURCE", str(ro_inputs / "source.h5ad"))
    assert main([*config, "download", "--output", "out/raw.h5ad"]) == 0
    source = str(ro_inputs / "source.h5ad")
    assert main([*config, "preprocess", "--input", source, "--output", "out/pre.h5ad"]) == 0
    assert snapshot(ro_inputs) == before


def _wait_for(check, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _owner_pid(folder: Path) -> int | None:
    try:
        return json.loads(lock_path(folder).read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


@pytest.mark.slow
def test_every_stage_reads_its_inputs_read_only(work, ro_inputs):
    """The whole chain, each stage's inputs in a read-only folder."""
    cli = [sys.executable, "-m", "src.app.cli", "--config", str(work / "run.yaml")]
    made = work / "made"
    subprocess.run([*cli, "--dry_run", "--output_dir", str(made)], cwd=ROOT, check=True)
    for name in ("preprocessed.h5ad", "embedded.h5ad", "metrics.json", "annotated.h5ad"):
        shutil.copy(made / name, ro_inputs / name)
    shutil.copytree(made / "model", ro_inputs / "model")
    read_only(ro_inputs)
    before = snapshot(ro_inputs)
    ro = {p.name: str(p) for p in ro_inputs.iterdir()}
    out = work / "out"
    steps = [
        ["train", "--input", ro["preprocessed.h5ad"], "--model_dir", str(out / "model"), "--output_dir", str(out)],
        ["embed", "--model_dir", ro["model"], "--input", ro["preprocessed.h5ad"], "--latent", str(out / "latent.npy"), "--output", str(out / "emb.h5ad")],
        ["evaluate", "--input", ro["preprocessed.h5ad"], "--embedded", ro["embedded.h5ad"], "--output", str(out / "metrics.json"), "--annotated", str(out / "annotated.h5ad")],
        ["plot", "--input", ro["annotated.h5ad"], "--metrics", ro["metrics.json"], "--model_dir", ro["model"], "--output", str(out / "figures")],
    ]  # fmt: skip
    for step in steps:
        subprocess.run([*cli, *step], cwd=ROOT, check=True, capture_output=True)
    assert snapshot(ro_inputs) == before


@pytest.mark.slow
def test_two_cli_runs_into_one_folder_do_not_interleave(tmp_path):
    """A second dry run into the folder of a running one is refused at once; the first ends
    with every output intact."""
    from src.app.checksums import manifest_problem, seal_status

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "src.app.cli", "--dry_run", "--output_dir", str(out)]
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(lambda: _owner_pid(out) == first.pid, 120, "the first run never took its lock")
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    assert second.returncode == 2, second.stderr
    last = second.stderr.strip().splitlines()[-1]
    assert re.match(
        rf"error: {re.escape(str(out))} is in use by another run \(PID {first.pid}", last
    )
    assert first.wait(timeout=600) == 0, first.stderr.read().decode()[-2000:]
    assert json.loads((out / "metrics.json").read_text())["f1_macro"] >= 0
    assert manifest_problem(out / "model") is None
    assert seal_status(out / "annotated.h5ad") == "intact"
    assert not lock_path(out).exists()


@pytest.mark.slow
def test_a_second_snakemake_on_the_same_results_is_refused(tmp_path):
    """From the same working folder Snakemake's own lock refuses it; from another one with the
    same results folder, or a CLI run into that run folder, the workflow's lock does; the
    first run completes (its jobs join its lock)."""
    from tests.workflow.helpers import RUN_CONFIG, snakemake_cmd, write_tiny_workdir

    first_dir, other_dir = tmp_path / "first", tmp_path / "other"
    for folder in (first_dir, other_dir):
        folder.mkdir()
        write_tiny_workdir(folder)
    results = first_dir / "results"
    shared = {**RUN_CONFIG, "paths": {"results": str(results)}}
    (other_dir / "run.yaml").write_text(yaml.safe_dump(shared))
    first = subprocess.Popen(
        snakemake_cmd(first_dir, "--cores", "1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    _wait_for(lambda: _owner_pid(results / "tiny") == first.pid, 180, "no workflow lock")
    same = subprocess.run(snakemake_cmd(first_dir, "--cores", "1"), capture_output=True, text=True, check=False)  # fmt: skip
    assert same.returncode != 0
    assert "Directory cannot be locked" in same.stdout + same.stderr
    other = subprocess.run(snakemake_cmd(other_dir, "--cores", "1"), capture_output=True, text=True, check=False)  # fmt: skip
    assert other.returncode != 0
    assert (
        f"{results / 'tiny'} is in use by another run (PID {first.pid}"
        in other.stdout + other.stderr
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "src.app.cli", "--config", "run.yaml", "write-config"]
    clash = subprocess.run(cli, cwd=first_dir, env=env, capture_output=True, text=True, check=False)
    assert clash.returncode == 2, clash.stderr
    assert "is in use by another run" in clash.stderr
    log = first.communicate(timeout=900)[0].decode()
    assert first.returncode == 0, log[-3000:]
    assert json.loads((results / "tiny" / "metrics.json").read_text())["f1_macro"] >= 0
    assert not lock_path(results / "tiny").exists()
    assert not (other_dir / "results").exists()
