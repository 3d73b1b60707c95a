"""The Snakefile on a tiny synthetic data set: a dry-run plan, then a real run and a no-op rerun."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import profile_dict

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["download", "preprocess", "train", "embed", "evaluate", "plot"]


@pytest.fixture
def workdir(tmp_path, raw_adata):
    raw_adata.write_h5ad(tmp_path / "tiny.h5ad")
    (tmp_path / "config.yml").write_text(yaml.safe_dump(profile_dict(annotation_threads=1)))
    cfg = {
        "run_id": "tiny",
        "data": {"source": "tiny.h5ad", "labels": None},
        "preprocess": {"n_top_genes": 150},
        "model": {"latent_dim": 4, "hidden_dims": [32]},
        "train": {"epochs": 2},
        "viz": {"neighbors_method": "gauss", "dpi": 40},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"),
        "--directory", str(workdir), "--config", f"app_config={workdir / 'run.yaml'}", *args,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def planned_jobs(proc: subprocess.CompletedProcess) -> set[str]:
    return {
        line.split()[1].rstrip(":") for line in proc.stdout.splitlines() if line.startswith("rule ")
    }


def test_dry_run_plans_every_stage(workdir):
    proc = snakemake(workdir, "-n")
    assert planned_jobs(proc) >= {*STAGES, "all"}


def test_end_to_end_then_nothing_to_do(workdir):
    snakemake(workdir, "--cores", "2")
    run = workdir / "results" / "tiny"
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["f1_macro"] <= 1
    latent = np.load(run / "latent.npy")
    assert latent.shape[1] == 4
    assert (run / "figures" / "umap.png").stat().st_size > 0
    assert yaml.safe_load((run / "config.used.yaml").read_text())["run_id"] == "tiny"
    for stage in STAGES:
        assert (workdir / "logs" / "tiny" / f"{stage}.log").exists(), stage
    again = snakemake(workdir, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr
