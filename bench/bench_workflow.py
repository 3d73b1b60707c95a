"""The whole workflow against scvi-tools' SCVI training alone, in one run on one machine.

Runs ``snakemake --cores N --forceall`` on PBMC 3k (every stage from the download to the figures,
process start-up and imports included) into a throwaway run id, reads each stage's seconds from
``benchmarks/<run_id>/*.tsv``, then trains scvi-tools' SCVI with its defaults on the same
preprocessed data (``bench_training.py``'s worker: the fit alone, imports and data loading
excluded) and prints one table with the ratio. Ours runs first, then SCVI, so neither competes
with the other for the cores.

    .venv/bin/python bench/bench_workflow.py [--data PATH] [--cores 2] [--skip-scvi]
        [--epochs-scvi N] [--out results/bench/workflow.json]

scvi-tools is the optional extra ``bench``: ``uv sync --extra bench``.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import bench_training as training  # noqa: E402 (the sibling script, for its SCVI worker)

DEFAULT_OUT = Path("results") / "bench" / "workflow.json"
STAGES = ("download", "preprocess", "train", "embed", "evaluate", "plot")


def stage_seconds(run_id: str, source: str) -> dict[str, float]:
    """Wall seconds of each stage's job from Snakemake's benchmark files."""
    out = {}
    for stage in STAGES:
        folder = Path("download") if stage == "download" else Path(run_id)
        name = source if stage == "download" else stage
        path = ROOT / "benchmarks" / folder / f"{name}.tsv"
        with path.open() as f:
            out[stage] = float(next(csv.DictReader(f, delimiter="\t"))["s"])
    return out


def run_workflow(data: Path, cores: int) -> dict[str, Any]:
    """One whole workflow run, forced from the download, into a throwaway run id (removed)."""
    run_id = f"bench-workflow-{os.getpid()}"
    env = dict(os.environ, APP__DATA__SOURCE=str(data.resolve()), APP__RUN_ID=run_id)
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores), "--forceall", "--quiet"]
    print(f"[bench] workflow: {' '.join(cmd)}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"bench: the workflow failed (exit status {proc.returncode})")
    from src.app.core.data.download import source_name

    source = source_name(str(data.resolve()))
    result = {"seconds": seconds, "stages": stage_seconds(run_id, source)}
    metrics = json.loads((ROOT / "results" / run_id / "metrics.json").read_text())
    result["f1_macro"] = metrics["f1_macro"]
    result["joint_f1_macro"] = metrics.get("joint_f1_macro")
    for folder in ("results", "logs", "benchmarks"):
        shutil.rmtree(ROOT / folder / run_id, ignore_errors=True)
    return result


def run_scvi(data: Path, args: argparse.Namespace) -> dict[str, Any] | None:
    """SCVI on the same preprocessed data in a child process (its fit seconds), or None."""
    if args.skip_scvi or importlib.util.find_spec("scvi") is None:
        if not args.skip_scvi:
            print(training.INSTALL_HINT, file=sys.stderr)
        return None
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "preprocessed.h5ad"
        training.preprocess_to(data, pre)
        threads = training.load_profile(training.load_cfg()).annotation_threads
        return training.run_child("scvi", pre, args, threads)


def report(ours: dict[str, Any], scvi: dict[str, Any] | None) -> str:
    stages = ours["stages"]
    lines = ["stage        seconds  share of the workflow"]
    lines += [f"{s:<12} {v:7.1f}  {v / ours['seconds']:6.1%}" for s, v in stages.items()]
    others = sum(v for s, v in stages.items() if s != "train")
    lines.append(f"{'workflow':<12} {ours['seconds']:7.1f}  (wall, Snakemake included)")
    lines.append(f"all but train {others:6.1f}  = {others / stages['train']:.2f} x train")
    lines.append(f"kNN macro F1 {ours['f1_macro']:.3f}, head {ours['joint_f1_macro']:.3f}")
    if scvi is not None:
        seconds = scvi["seconds_to_trained_model"]
        lines.append(
            f"scvi-tools SCVI training alone: {seconds:.1f} s ({scvi['epochs']} epochs); "
            f"whole workflow {seconds / ours['seconds']:.1f}x faster; train stage "
            f"{seconds / stages['train']:.1f}x"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=training.DEFAULT_DATA, help="raw counts")
    parser.add_argument("--cores", type=int, default=2, help="snakemake --cores")
    parser.add_argument("--skip-scvi", action="store_true", help="run the workflow only")
    parser.add_argument("--epochs-scvi", type=int, help="shorten the baseline (default: its own)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON of the figures")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    ours = run_workflow(args.data, args.cores)
    print(report(ours, None), file=sys.stderr, flush=True)
    args.out.write_text(json.dumps({"ours": ours}, indent=2) + "\n")
    scvi = run_scvi(args.data, args)
    args.out.write_text(json.dumps({"ours": ours, "scvi": scvi}, indent=2) + "\n")
    print(report(ours, scvi))


if __name__ == "__main__":
    main()
