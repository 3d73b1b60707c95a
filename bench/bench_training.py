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
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    # run as a script from anywhere: the package lives at the repo root
    sys.path.insert(0, str(ROOT))

DEFAULT_CONFIG = ROOT / "config" / "default.yaml"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "pbmc3k" / "pbmc3k_raw.h5ad"
DEFAULT_OUT = Path("results") / "bench" / "bench.json"
METHODS = ("ours", "scvi")
RESULT_PREFIX = '{"method"'
INSTALL_HINT = (
    "scvi-tools is not installed; showing ours only. "
    "Install the baseline with `uv sync --extra bench`."
)


# --- shared helpers ---------------------------------------------------------------------------


def load_cfg() -> Any:
    from src.app.config import load_config

    return load_config(DEFAULT_CONFIG)


def load_profile(cfg: Any) -> Any:
    """The machine profile ``config.yml``, or its template when the machine has none yet."""
    from src.app.machine import load_machine_profile

    path = ROOT / cfg.paths.machine_profile
    if not path.exists():
        path = ROOT / "config.yml.example"
    return load_machine_profile(path)


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def f1_table(latent: Any, obs: Any, cfg: Any) -> dict[str, dict[str, float]]:
    """Macro F1 of kNN and logistic regression (k-fold CV) for each label key."""
    from src.app.core.eval import METHODS as EVAL_METHODS
    from src.app.core.eval import evaluate_latent

    labels = evaluate_latent(latent, obs, cfg.eval, seed=cfg.seed)["labels"]
    return {
        key: {m: labels[key][m]["f1_macro"] for m in EVAL_METHODS} for key in cfg.eval.label_keys
    }


def joint_f1(obs: Any, predicted: Any, cfg: Any) -> float:
    """Macro F1 of predicted labels (strings, every cell) on the labelled cells whose label the
    heads did not see: the same draw as the classifier head's (``labels.visible_cells``)."""
    import numpy as np

    from src.app.core.data.labels import label_codes, visible_cells
    from src.app.core.evaluate.metrics import macro_f1

    codes, classes = label_codes(obs[cfg.annotation.label_key])
    lookup = {c: i for i, c in enumerate(classes)}
    pred = np.array([lookup.get(str(p), -1) for p in predicted])
    hidden = (codes >= 0) & ~visible_cells(obs, cfg)
    return macro_f1(codes[hidden], pred[hidden])


def result_row(method: str, seconds: float, epochs: int, **extra: Any) -> dict[str, Any]:
    return {
        "method": method,
        "seconds_to_trained_model": seconds,
        "seconds_per_epoch": seconds / max(epochs, 1),
        "epochs": epochs,
        **extra,
    }


# --- children: one method each ----------------------------------------------------------------


def fit_ours(cfg: Any, runtime: Any, pre_h5ad: Path) -> tuple[Any, list, float, Any, Any]:
    """Fit our model on a preprocessed h5ad: ``(data, history, fit seconds, latent, the head's
    predicted labels)``; data loading is outside the timed fit."""
    from src.app.core.data_adapter import DataAdapter
    from src.app.core.model_adapter import ModelAdapter

    data = DataAdapter(cfg, runtime=runtime, path=pre_h5ad)
    start = time.perf_counter()
    model = ModelAdapter(cfg, runtime=runtime)
    history = model.fit(data)
    seconds = time.perf_counter() - start
    latent = model.predict(data.iter_all_batches())
    predicted, _ = model.predict_labels(data.iter_all_batches())
    return data, history, seconds, latent, predicted


def run_ours(pre_h5ad: Path) -> dict[str, Any]:
    from src.app.core.model.runtime import runtime_for

    cfg = load_cfg()
    runtime = runtime_for(cfg, profile=load_profile(cfg))
    data, history, seconds, latent, predicted = fit_ours(cfg, runtime, pre_h5ad)
    rss = peak_rss_mb()
    return result_row(
        "ours",
        seconds,
        len(history),
        peak_rss_mb=rss,
        device=runtime.device,
        threads=runtime.threads,
        f1=f1_table(latent, data.obs, cfg),
        joint_f1=joint_f1(data.obs, predicted, cfg),
        head_seconds=0.0,  # trained with the VAE
    )


def run_scvi(pre_h5ad: Path, max_epochs: int | None) -> dict[str, Any]:
    import anndata as ad
    import scvi
    import torch

    from src.app.core.data.preprocess import COUNTS_LAYER
    from src.app.machine import resolve_runtime

    cfg = load_cfg()
    # same device and thread count as ours, by the same config.yml rules
    runtime = resolve_runtime(
        load_profile(cfg), cfg.train, cuda_available=torch.cuda.is_available()
    )
    torch.set_num_threads(runtime.threads)
    scvi.settings.seed = 0
    adata = ad.read_h5ad(pre_h5ad)
    scvi.model.SCVI.setup_anndata(adata, layer=COUNTS_LAYER)
    train_kwargs: dict[str, Any] = {"accelerator": "gpu" if runtime.device == "cuda" else "cpu"}
    if max_epochs is not None:
        train_kwargs["max_epochs"] = max_epochs
    start = time.perf_counter()
    model = scvi.model.SCVI(adata)
    model.train(**train_kwargs)
    seconds = time.perf_counter() - start
    latent = model.get_latent_representation()
    # the head: SCANVI from the trained SCVI on the same visible labels, scvi-tools' defaults
    import numpy as np

    from src.app.core.data.labels import visible_cells

    key = cfg.annotation.label_key
    known = adata.obs[key].notna().to_numpy() & visible_cells(adata.obs, cfg)
    adata.obs["bench_labels"] = np.where(known, adata.obs[key].astype(str), "Unknown")
    start = time.perf_counter()
    scanvi = scvi.model.SCANVI.from_scvi_model(
        model, unlabeled_category="Unknown", labels_key="bench_labels", adata=adata
    )
    scanvi.train(**{k: v for k, v in train_kwargs.items() if k != "max_epochs"})
    head_seconds = time.perf_counter() - start
    predicted = scanvi.predict()
    rss = peak_rss_mb()
    return result_row(
        "scvi",
        seconds,
        len(model.history["elbo_train"]),
        peak_rss_mb=rss,
        device=runtime.device,
        threads=runtime.threads,
        version=scvi.__version__,
        f1=f1_table(latent, adata.obs, cfg),
        joint_f1=joint_f1(adata.obs, predicted, cfg),
        head_seconds=head_seconds,
    )


def run_worker(method: str, pre_h5ad: Path, epochs_scvi: int | None) -> None:
    row = run_ours(pre_h5ad) if method == "ours" else run_scvi(pre_h5ad, epochs_scvi)
    # the parent reads the last line that starts with RESULT_PREFIX
    print(json.dumps(row), flush=True)


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


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def parse_result(stdout: str) -> dict[str, Any] | None:
    """The child's result line; other stdout lines go on to stderr so none is lost."""
    result = None
    for line in stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line)
        elif line.strip():
            print(line, file=sys.stderr)
    return result


def run_child(method: str, pre_h5ad: Path, args: argparse.Namespace, threads: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--pre", pre_h5ad]
    if args.epochs_scvi is not None:
        cmd += ["--epochs-scvi", str(args.epochs_scvi)]
    print(f"[bench] training {method} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(
        [str(c) for c in cmd],
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(threads),
        cwd=ROOT,
        check=False,
    )
    result = parse_result(proc.stdout)
    if proc.returncode != 0 or result is None:
        raise SystemExit(f"bench: the {method} run failed (exit status {proc.returncode})")
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
