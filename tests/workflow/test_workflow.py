"""The Snakefile on a tiny synthetic data set: a dry-run plan, then a real run and a no-op rerun."""

import json
import subprocess

import numpy as np
import yaml

from tests.workflow.conftest import snakemake_cmd, write_tiny_workdir

STAGES = ["download", "preprocess", "train", "embed", "evaluate", "plot"]


def snakemake(workdir, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        snakemake_cmd(workdir, *args), capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def planned_jobs(proc: subprocess.CompletedProcess) -> set[str]:
    return {
        line.split()[1].rstrip(":") for line in proc.stdout.splitlines() if line.startswith("rule ")
    }


def test_dry_run_plans_every_stage(tmp_path):
    write_tiny_workdir(tmp_path)
    proc = snakemake(tmp_path, "-n")
    assert planned_jobs(proc) >= {*STAGES, "all"}
    assert not (tmp_path / "results").exists()


def test_end_to_end_then_nothing_to_do(e2e_run):
    run = e2e_run / "results" / "tiny"
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["f1_macro"] <= 1
    latent = np.load(run / "latent.npy")
    assert latent.shape[1] == 4
    assert (run / "figures" / "umap.png").stat().st_size > 0
    assert yaml.safe_load((run / "config.used.yaml").read_text())["run_id"] == "tiny"
    for stage in STAGES:
        assert (e2e_run / "logs" / "tiny" / f"{stage}.log").exists(), stage
    again = snakemake(e2e_run, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr
