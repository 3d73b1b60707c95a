"""The end-to-end workflow run starts in the background as soon as collection ends, so its
subprocesses overlap the in-process tests; ``e2e_run`` waits for it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
E2E_KEY = pytest.StashKey[tuple[subprocess.Popen, Path]]()


def write_tiny_workdir(workdir: Path) -> None:
    """A synthetic h5ad, a 1-thread CPU machine profile and a small run config in ``workdir``."""
    from src.app.core.synthetic import synthetic_counts
    from tests.conftest import profile_dict

    synthetic_counts(n_cells=300, n_genes=600, seed=1).write_h5ad(workdir / "tiny.h5ad")
    (workdir / "config.yml").write_text(yaml.safe_dump(profile_dict(annotation_threads=1)))
    cfg = {
        "run_id": "tiny",
        "data": {"source": "tiny.h5ad", "labels": None},
        "preprocess": {"n_top_genes": 150},
        "model": {"latent_dim": 4, "hidden_dims": [32]},
        "train": {"epochs": 2},
        "viz": {"neighbors_method": "gauss", "dpi": 40},
    }
    (workdir / "run.yaml").write_text(yaml.safe_dump(cfg))


def snakemake_cmd(workdir: Path, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"),
        "--directory", str(workdir), "--config", f"app_config={workdir / 'run.yaml'}", *args,
    ]  # fmt: skip


def _start(workdir: Path) -> subprocess.Popen:
    write_tiny_workdir(workdir)
    return subprocess.Popen(
        snakemake_cmd(workdir, "--cores", "2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def pytest_collection_finish(session: pytest.Session) -> None:
    if any("e2e_run" in getattr(item, "fixturenames", ()) for item in session.items):
        workdir = Path(tempfile.mkdtemp(prefix="cellvae-e2e-"))
        session.config.stash[E2E_KEY] = (_start(workdir), workdir)


@pytest.fixture(scope="session")
def e2e_run(request: pytest.FixtureRequest):
    """Working folder of a finished tiny workflow run (results/tiny, logs/tiny)."""
    started = request.config.stash.get(E2E_KEY, None)
    if started is None:
        workdir = Path(tempfile.mkdtemp(prefix="cellvae-e2e-"))
        started = (_start(workdir), workdir)
    proc, workdir = started
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    yield workdir
    shutil.rmtree(workdir, ignore_errors=True)
