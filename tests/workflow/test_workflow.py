"""The Snakefile on a tiny synthetic data set: dry-run plans (resources from config.yml, the rerun
matrix, the SLURM profile), a real run that keeps no intermediates, its report and rule graph.
The Snakemake calls are session fixtures (see conftest.py); these tests check their results."""

import json
import subprocess

import h5py
import numpy as np
import pytest

from src.app.layout import FIGURES
from tests.workflow.helpers import MATRIX_CHANGES, STAGES, planned_jobs

pytestmark = pytest.mark.slow

COMPUTE = ["preprocess", "train", "embed", "evaluate", "plot"]


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_dry_run_plans_every_stage_within_the_machine_profile(fresh_folder):
    workdir, calls = fresh_folder  # config.yml: 1 thread, 2 GB, no GPU; --cores 4
    jobs = planned_jobs(ok(calls["plan"]))
    assert {job.rule for job in jobs} >= {*STAGES, "all", "config_used"}
    assert "summary" not in {job.rule for job in jobs}  # one run: results/tiny/ only
    assert {job.run for job in jobs if job.rule in COMPUTE} == {"tiny"}
    assert not (workdir / "results").exists()
    for job in jobs:
        assert job.threads == 1, job
        assert int(job.resources.get("mem_mb", 0)) <= 2048, job
        assert "gpu" not in job.resources, job
    # a stage's code (the folders of the layers it runs) is an input of its rule
    inputs = {job.rule: {path.split("core/", 1)[-1] for path in job.input} for job in jobs}
    assert {"viz.py", "plot/figures.py"} <= inputs["plot"]
    assert {"train.py", "model/train_loop.py", "model/nn.py", "model_adapter.py"} <= inputs["train"]
    assert {"eval.py", "evaluate/classify.py", "evaluate/baseline.py"} <= inputs["evaluate"]
    # editing evaluation or plotting code never retrains or re-embeds; plot reads and draws
    later = {
        path for path in inputs["evaluate"] | inputs["plot"] if "evaluate" in path or "plot" in path
    }
    assert later
    assert not later & (inputs["train"] | inputs["embed"])
    assert not any(path.startswith(("model", "evaluate", "data")) for path in inputs["plot"])
    assert not any(path.startswith("model") for path in inputs["evaluate"])


def test_threads_memory_and_gpu_follow_the_machine_profile(rerun_matrix):
    _, plan = rerun_matrix  # config.yml: 3 threads, 3 GB, a 4 GB GPU; --cores 8
    jobs = [job for job in planned_jobs(plan) if job.rule != "all"]
    assert {job.rule for job in jobs} >= set(STAGES)
    for job in jobs:
        assert int(job.resources["mem_mb"]) <= 3 * 1024, job
        assert job.threads == (3 if job.rule in COMPUTE else 1), job
        assert job.resources.get("gpu") == ("1" if job.rule in ("train", "embed") else None), job


def test_rerun_matrix_reruns_only_stale_stages(rerun_matrix):
    _, plan = rerun_matrix
    planned: dict[str, set[str]] = {}
    for job in planned_jobs(plan):
        # a download counts for the run that reads its source
        run = job.run or {"tiny2": "source"}.get(job.wildcards.get("source"))
        if job.rule in STAGES and run is not None:
            planned.setdefault(run, set()).add(job.rule)
    expected = {
        "train_key": {"train", "embed", "evaluate", "plot"},
        "plot_key": {"plot"},
        "umap_key": {"evaluate", "plot"},
        "eval_key": {"evaluate", "plot"},
        "source": set(STAGES),
    }
    assert set(MATRIX_CHANGES) - set(expected) == {"same"}
    # "same" had no change, only a config.yml with other threads, memory and GPU
    why = [line.strip() for line in plan.stdout.splitlines() if "reason:" in line]
    assert planned == expected, "Snakemake's reasons:\n" + "\n".join(sorted(set(why)))
    # the runs' metrics changed, so the table across runs is rebuilt
    assert "summary" in {job.rule for job in planned_jobs(plan)}


def test_end_to_end_keeps_no_intermediates_then_nothing_to_do(e2e_run):
    workdir, after = e2e_run
    run = workdir / "results" / "tiny"
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["f1_macro"] <= 1
    latent = np.load(run / "latent.npy")
    assert latent.shape[1] == 4
    with h5py.File(run / "embedded.h5ad") as f:
        assert f["obsm"]["X_vae"].shape == latent.shape
        assert "X" not in f
        assert len(f.get("layers", ())) == 0
    for name in FIGURES:
        assert (run / "figures" / f"{name}.png").stat().st_size > 0, name
    assert (run / "model").is_dir()
    assert (run / "config.used.yaml").exists()
    # keep_intermediate_files: false -> the temp() intermediate is gone, the raw download is not
    assert not (run / "preprocessed.h5ad").exists()
    assert (workdir / "resources" / "raw" / "tiny.h5ad").exists()
    for stage in COMPUTE:
        assert (workdir / "logs" / "tiny" / f"{stage}.log").exists(), stage
        assert (workdir / "benchmarks" / "tiny" / f"{stage}.tsv").exists(), stage
    assert (workdir / "logs" / "download" / "tiny.log").exists()
    again = ok(after["again"])
    assert "Nothing to be done" in again.stdout + again.stderr


def test_annotated_h5ad_reads_in_scanpy_and_metrics_have_their_sections(e2e_run):
    import scanpy as sc

    workdir, _ = e2e_run
    run = workdir / "results" / "tiny"
    adata = sc.read_h5ad(run / "annotated.h5ad", backed="r")
    assert {"X_vae", "X_umap"} <= set(adata.obsm)
    assert "X_pca" not in adata.obsm  # baseline.method: none
    assert {"predicted_cell_type_knn", "predicted_cell_type_coarse"} <= set(adata.obs.columns)
    assert json.loads(adata.uns["config"])["run_id"] == "tiny"
    adata.file.close()
    metrics = json.loads((run / "metrics.json").read_text())
    for section in ("labels", "label_efficiency", "latent_quality", "protocol"):
        assert section in metrics, section
    assert "baseline" not in metrics
    assert set(metrics["label_efficiency"]["cell_type"]["knn"]) == {"0.1", "0.5"}


def test_report_holds_the_figures_and_metrics(e2e_run):
    workdir, after = e2e_run
    ok(after["report"])
    html = (workdir / "report.html").read_text()
    for name in FIGURES:
        assert f"{name}.png" in html, name
    assert "metrics.json" in html
    assert "UMAP of the VAE latent space" in html  # the caption
