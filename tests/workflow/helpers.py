"""The workflow tests' Snakemake runs: a real tiny run and the checks after it, the rerun matrix,
a dry run on a fresh folder. Each is a session fixture of conftest.py (behind the ``slow``
marker), run in the foreground."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from src.app.layout import FIGURES

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["download", "preprocess", "train", "embed", "evaluate", "plot"]
RUN_CONFIG = {
    "run_id": "tiny",
    "data": {"source": "tiny.h5ad", "labels": None},
    "preprocess": {"n_top_genes": 150},
    "model": {"latent_dim": 4, "hidden_dims": [32]},
    "train": {"epochs": 2},
    "eval": {"label_fractions": [0.1, 0.5], "n_repeats": 1},
    # the baseline is covered by the in-process dry run (tests/unit/test_cli.py); here its absence
    "baseline": {"method": "none"},
    "viz": {"dpi": 40},
}


def write_profile(workdir: Path, **changes) -> None:
    """config.yml: the example machine profile, 1 thread, with ``changes``."""
    from tests.conftest import profile_dict

    profile = profile_dict(**{"annotation_threads": 1, **changes})
    (workdir / "config.yml").write_text(yaml.safe_dump(profile))


def write_tiny_workdir(workdir: Path, **profile_changes) -> None:
    """A synthetic h5ad, a CPU machine profile and a small run config in ``workdir``."""
    from src.app.core.data.synthetic import synthetic_counts

    synthetic_counts(n_cells=300, n_genes=600, seed=1).write_h5ad(workdir / "tiny.h5ad")
    write_profile(workdir, **profile_changes)
    (workdir / "run.yaml").write_text(yaml.safe_dump(RUN_CONFIG))


def snakemake_cmd(workdir: Path, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"),
        "--directory", str(workdir), "--config", f"app_config={workdir / 'run.yaml'}", *args,
    ]  # fmt: skip


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """Run Snakemake on ``workdir``; it must succeed."""
    proc = subprocess.run(
        snakemake_cmd(workdir, *args), capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@dataclass
class Job:
    """One job of a dry run's plan."""

    rule: str
    wildcards: dict[str, str] = field(default_factory=dict)
    threads: int = 1
    resources: dict[str, str] = field(default_factory=dict)
    input: list[str] = field(default_factory=list)

    @property
    def run(self) -> str | None:
        return self.wildcards.get("run_id")


def planned_jobs(proc: subprocess.CompletedProcess) -> list[Job]:
    """Jobs of a dry run's output (``rule X:`` blocks with wildcards, threads and resources)."""
    jobs: list[Job] = []
    for line in proc.stdout.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            jobs.append(Job(m.group(1)))
        elif jobs and (m := re.match(r"^    (input|wildcards|threads|resources): (.*)$", line)):
            key, value = m.groups()
            if key == "threads":
                jobs[-1].threads = int(value)
            elif key == "input":
                jobs[-1].input = value.split(", ")
            else:
                pairs = (item.split("=", 1) for item in value.split(", "))
                setattr(jobs[-1], key, dict(pairs))
    return jobs


# --- the runs ----------------------------------------------------------------------------------


def snakemake_all(workdir: Path, calls: dict[str, tuple[str, ...]]) -> dict:
    """Several Snakemake calls on ``workdir`` at once (name -> arguments); their results."""
    procs = {
        name: subprocess.Popen(
            snakemake_cmd(workdir, *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in calls.items()
    }
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        out[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return out


def e2e_steps() -> tuple[Path, dict]:
    """A real tiny run with keep_intermediate_files: false, then (at once) a dry run and the HTML
    report."""
    workdir = Path(tempfile.mkdtemp(prefix="cellvae-e2e-"))
    write_tiny_workdir(workdir, keep_intermediate_files=False)
    snakemake(workdir, "--cores", "2")
    after = snakemake_all(
        workdir,
        {"again": ("-n",), "report": ("--report", str(workdir / "report.html"))},
    )
    return workdir, after


# runs of the rerun matrix: each one's change after the first (touched) state, by run id
MATRIX_CHANGES = {
    "same": {},
    "train_key": {"train": {"epochs": 3}},
    "plot_key": {"viz": {"dpi": 41}},
    "umap_key": {"viz": {"min_dist": 0.3}},
    "eval_key": {"eval": {"n_neighbors": 5}},
    "source": {"data": {"source": "tiny2.h5ad"}},
}


def matrix_steps() -> tuple[Path, subprocess.CompletedProcess]:
    """Empty outputs made up to date with ``--touch`` (which records params and inputs like a real
    run), then a dry run after each run's change and with a config.yml of other threads, memory
    and GPU."""
    workdir = Path(tempfile.mkdtemp(prefix="cellvae-matrix-"))
    write_tiny_workdir(workdir)
    shutil.copy(workdir / "tiny.h5ad", workdir / "tiny2.h5ad")
    runs = {run_id: {} for run_id in MATRIX_CHANGES}
    (workdir / "runs.yaml").write_text(yaml.safe_dump({"runs": runs}))
    for run_id in runs:
        run = workdir / "results" / run_id
        (run / "model").mkdir(parents=True)
        (run / "figures").mkdir()
        for name in ("preprocessed.h5ad", "latent.npy", "embedded.h5ad", "metrics.json"):
            (run / name).touch()
        (run / "annotated.h5ad").touch()
        for name in FIGURES:
            (run / "figures" / f"{name}.png").touch()
        (run / "config.used.yaml").touch()
    (workdir / "results" / "runs_summary.tsv").touch()
    (workdir / "resources" / "raw").mkdir(parents=True)
    (workdir / "resources" / "raw" / "tiny.h5ad").touch()
    # --forceall: every job is touched in order (later outputs newer) and records its metadata
    runs_file = str(workdir / "runs.yaml")
    touch = ("--touch", "--forceall", "--cores", "1")
    snakemake(workdir, "--configfile", runs_file, *touch)

    (workdir / "runs.yaml").write_text(yaml.safe_dump({"runs": MATRIX_CHANGES}))
    # gpu_vram_gb <= 4 keeps the default batch size, a train key, as it was (128)
    write_profile(workdir, annotation_threads=3, max_ram_usage_gb=3.0, gpu_vram_gb=4.0)
    plan = snakemake(workdir, "--configfile", runs_file, "-n", "--cores", "8")
    return workdir, plan


def fresh_steps() -> tuple[Path, dict]:
    """A dry run on a fresh tiny folder (1 thread, 2 GB, no GPU). The linter, snakefmt, the rule
    graph and the SLURM dry run are checked by .ci/run, outside the 30 s suite."""
    workdir = Path(tempfile.mkdtemp(prefix="cellvae-fresh-"))
    write_tiny_workdir(workdir, annotation_threads=1, max_ram_usage_gb=2.0, gpu_vram_gb=0.0)
    return workdir, snakemake_all(workdir, {"plan": ("-n", "--cores", "4")})
