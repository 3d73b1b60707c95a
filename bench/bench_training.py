"""Benchmark our VAE against scvi-tools' SCVI (defaults) on the same preprocessed data, one run.

Both annotate with their semi-supervised heads too: ours (trained jointly) and SCANVI fine-tuned
from the trained SCVI (scvi-tools' recipe, its defaults), on the same visible labels
(``annotation.label_fraction`` of ``annotation.label_key``), scored on the hidden cells.

The parent process preprocesses the raw counts once with the project's default config and writes
them to a temporary h5ad. Each method then trains in its own child process, so peak RSS is per
method and torch thread settings do not leak; each child prints one JSON line. The parent prints
one table and writes all rows to ``--out``.

    .venv/bin/python bench/bench_training.py [--data PATH] [--epochs-scvi N] [--skip-scvi]
        [--out results/bench/bench.json]

scvi-tools is the optional extra ``bench``: ``uv sync --extra bench``.

This file holds the parent and the command line; the worker (``--worker``) and the helpers it
shares with gpu_check are in ``bench/training_worker.py``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    # run as a script from anywhere: the package lives at the repo root
    sys.path.insert(0, str(ROOT))

# bench_workflow reaches load_cfg and load_profile through this module too
from bench._child import run_for_result  # noqa: E402 (after the path above)
from bench.training_worker import (  # noqa: E402
    RESULT_PREFIX,
    load_cfg,
    load_profile,
    run_worker,
)

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "pbmc3k" / "pbmc3k_raw.h5ad"
DEFAULT_OUT = Path("results") / "bench" / "bench.json"
METHODS = ("ours", "scvi")
INSTALL_HINT = (
    "scvi-tools is not installed; showing ours only. "
    "Install the baseline with `uv sync --extra bench`."
)


# --- parent: preprocess once, run the children, print the table ------------------------------


def preprocess_to(data_path: Path, out_h5ad: Path) -> tuple[int, int]:
    """Preprocess raw counts with the default config and write them; returns (cells, genes)."""
    from src.app.core.data.download import join_labels, read_counts
    from src.app.core.data.preprocess import preprocess

    cfg = load_cfg()
    raw = read_counts(data_path)
    missing = [k for k in cfg.eval.label_keys if k not in raw.obs.columns]
    if missing and cfg.data.labels is not None:
        join_labels(raw, ROOT / cfg.data.labels)
    adata = preprocess(raw, cfg.preprocess, seed=cfg.seed)
    adata.write_h5ad(out_h5ad)
    return adata.n_obs, adata.n_vars


def run_child(method: str, pre_h5ad: Path, args: argparse.Namespace, threads: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--pre", pre_h5ad]
    if args.epochs_scvi is not None:
        cmd += ["--epochs-scvi", str(args.epochs_scvi)]
    print(f"[bench] training {method} ...", file=sys.stderr, flush=True)
    result, returncode = run_for_result(cmd, threads, RESULT_PREFIX)
    if returncode != 0 or result is None:
        raise SystemExit(f"bench: the {method} run failed (exit status {returncode})")
    return result


def format_table(rows: list[dict[str, Any]], label_keys: tuple[str, ...]) -> str:
    """One aligned plain-text table, a row per method."""
    header = ["method", "s to model", "s/epoch", "epochs", "peak RSS MB"]
    header += [f"{m} F1 {k}" for m in ("kNN", "logreg") for k in label_keys]
    header += ["head F1", "head s"]
    lines = [header]
    for row in rows:
        cells = [
            row["method"],
            f"{row['seconds_to_trained_model']:.1f}",
            f"{row['seconds_per_epoch']:.3f}",
            str(row["epochs"]),
            f"{row['peak_rss_mb']:.0f}",
        ]
        cells += [f"{row['f1'][k][m]:.3f}" for m in ("knn", "logreg") for k in label_keys]
        cells += [f"{row['joint_f1']:.3f}", f"{row['head_seconds']:.1f}"]
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def speed_ratios(rows: list[dict[str, Any]]) -> dict[str, float] | None:
    """scvi / ours for time to a trained model and per epoch (both from this run)."""
    by_method = {row["method"]: row for row in rows}
    if not {"ours", "scvi"} <= set(by_method):
        return None
    ours, scvi = by_method["ours"], by_method["scvi"]
    return {key: scvi[key] / ours[key] for key in ("seconds_to_trained_model", "seconds_per_epoch")}


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    from src.app.io_utils import write_json

    cfg = load_cfg()
    threads = load_profile(cfg).annotation_threads
    want_scvi = not args.skip_scvi and importlib.util.find_spec("scvi") is not None
    if not args.skip_scvi and not want_scvi:
        print(INSTALL_HINT)
    methods = METHODS if want_scvi else ("ours",)
    with tempfile.TemporaryDirectory(prefix="bench_") as tmp:
        pre_h5ad = Path(tmp) / "preprocessed.h5ad"
        n_cells, n_genes = preprocess_to(Path(args.data), pre_h5ad)
        rows = [run_child(m, pre_h5ad, args, threads) for m in methods]
    report = {
        "data": str(args.data),
        "n_cells": n_cells,
        "n_genes": n_genes,
        "threads": threads,
        "rows": rows,
        "ratio_scvi_over_ours": speed_ratios(rows),
    }
    write_json(args.out, report)
    return report


def print_report(report: dict[str, Any], label_keys: tuple[str, ...], out: Path) -> None:
    print(
        f"\n{report['n_cells']} cells x {report['n_genes']} genes, "
        f"{report['threads']} threads, {report['rows'][0]['device']}"
    )
    print(format_table(report["rows"], label_keys))
    print(
        "head F1: macro F1 on the hidden cells of the label key of the classifier head (ours, "
        "trained jointly; scvi: SCANVI fine-tuned from the SCVI above, head s its extra time)"
    )
    ratios = report["ratio_scvi_over_ours"]
    if ratios is not None:
        print(
            f"scvi / ours (same run): {ratios['seconds_to_trained_model']:.1f}x time to a "
            f"trained model, {ratios['seconds_per_epoch']:.1f}x per epoch"
        )
    print(f"rows written to {out}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="raw counts (h5ad, ...)")
    parser.add_argument(
        "--epochs-scvi", type=int, default=None, help="override scvi-tools' default max_epochs"
    )
    parser.add_argument("--skip-scvi", action="store_true", help="run ours only")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file of all rows")
    # internal: a child process runs one method
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--pre", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker is not None:
        run_worker(args.worker, args.pre, args.epochs_scvi)
        return
    report = run_bench(args)
    print_report(report, load_cfg().eval.label_keys, args.out)


if __name__ == "__main__":
    main()
