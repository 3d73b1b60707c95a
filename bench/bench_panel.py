"""The panel benchmark: ours, scvi-tools SCVI and the scanpy PCA route (+ Harmony) on the same cells.

For PBMC 3k and every data set of ``../shared/data/panel`` the raw counts go through the project's
preprocess stage (default config; ``data.batch_key`` and the label keys of the set). Then, for each
seed, each method fits in its own child process (its peak RSS is that child's own) and leaves a
latent in the cache ``results/bench_panel/<set>/<method>_seed<k>.npz`` (+ ``.json``: timing, peak
RSS and the key it was made under), reused on a rerun unless ``--fresh``:

- ``ours``: the train and embed stages (``src.app.stages``) with the default config;
- ``scvi``: scvi-tools' ``SCVI`` with its defaults on the counts layer of the same cells and genes
  (``batch_key`` where the set has batches);
- ``pca``: the project's PCA baseline, and ``harmony`` on it where the set has batches.

Every latent is scored with the project's evaluation functions: kNN (k=15) and logistic-regression
5-fold macro F1 per label key; on batch sets also the scIB aggregates and the cross-batch transfer
macro F1 (``src.app.core.evaluate.batch``). One markdown table of the mean and SD over the seeds
goes to stdout and ``results/bench_panel/table.md``.

    uv run python bench/bench_panel.py [--sets pbmc3k ...] [--seeds 0 1 2]
        [--methods ours scvi pca] [--fresh] [--epochs-scvi N] [--threads N] [--smoke]

``--smoke``: 1 seed, 2 epochs for both models, every set, cached under results/bench_panel/smoke.

This file holds the command line and the run (preprocess, fit what is not cached, score,
tabulate); the data sets and their config are in ``bench/panel_sets.py``, the cache and its keys
in ``bench/panel_cache.py``, the children (``--one``) in ``bench/panel_fit.py``, the scores in
``bench/panel_score.py`` and the table in ``bench/panel_table.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    # run as a script from anywhere: the package lives at the repo root
    sys.path.insert(0, str(ROOT))

# after the path above: the bench modules import as bench.<name>
from bench._child import run_for_result  # noqa: E402
from bench.panel_cache import cache_keys, cache_paths, cached, cells_hash  # noqa: E402
from bench.panel_fit import RESULT_PREFIX, run_one  # noqa: E402
from bench.panel_score import score_seed  # noqa: E402
from bench.panel_sets import SETS, bench_profile, set_config  # noqa: E402
from bench.panel_table import format_table, table_header  # noqa: E402

CACHE = ROOT / "results" / "bench_panel"
METHODS = ("ours", "scvi", "pca")


# --- parent: preprocess, fit what is not cached -------------------------------------------------


def preprocess_seed(name: str, seed: int, folder: Path, threads: int | None) -> tuple[Path, Any]:
    """The preprocess stage on the set's raw counts for ``seed`` (the split is seeded); returns
    the file and its AnnData (backed: ``.obs`` and names only)."""
    import anndata as ad

    from src.app import stages

    cfg = set_config(name, seed, None)
    out = folder / "work" / f"preprocessed_seed{seed}.h5ad"
    out.parent.mkdir(parents=True, exist_ok=True)
    stages.preprocess(cfg, input=SETS[name].path, output=out, profile=bench_profile(cfg, threads))
    return out, ad.read_h5ad(out, backed="r")


def run_child(method: str, name: str, seed: int, pre: Path, args: argparse.Namespace) -> dict:
    """One fit in a child process; returns its rows by method (pca: pca and harmony)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", method, "--set", name]
    cmd += ["--seed", str(seed), "--pre", str(pre), "--folder", str(pre.parent.parent)]
    for flag in ("epochs_ours", "epochs_scvi", "threads"):
        if getattr(args, flag) is not None:
            cmd += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
    cfg = set_config(name, seed, None)
    threads = bench_profile(cfg, args.threads).annotation_threads
    print(f"[bench_panel] {name} seed {seed}: fitting {method} ...", file=sys.stderr, flush=True)
    rows, returncode = run_for_result(cmd, threads, RESULT_PREFIX)
    if returncode != 0 or rows is None:
        raise RuntimeError(f"{method} on {name} seed {seed} failed (exit status {returncode})")
    return rows


def ensure_fits(name: str, seed: int, args: argparse.Namespace, folder: Path) -> tuple:
    """Fit every method of ``args.methods`` not cached for (set, seed); returns the obs and the
    latent and record of each method (harmony with pca's) made under the current keys."""
    pre, adata = preprocess_seed(name, seed, folder, args.threads)
    keys = cache_keys(name, seed, cells_hash(adata), args)
    obs = adata.obs.copy()
    adata.file.close()
    for method in args.methods:
        if not args.fresh and cached(folder, method, seed, keys[method]) is not None:
            continue
        for row_method in ("pca", "harmony") if method == "pca" else (method,):
            cache_paths(folder, row_method, seed)[1].unlink(missing_ok=True)
        rows = run_child(method, name, seed, pre, args)
        for row_method, row in rows.items():
            record = {"method": row_method, "set": name, "seed": seed, "key": keys[method], **row}
            cache_paths(folder, row_method, seed)[1].write_text(json.dumps(record, indent=1))
    latents = {}
    for method in args.methods:
        for row_method in ("pca", "harmony") if method == "pca" else (method,):
            record = cached(folder, row_method, seed, keys[method])
            if record is not None:
                latent = np.load(cache_paths(folder, row_method, seed)[0])["latent"]
                latents[row_method] = (latent, record)
    return obs, latents


# --- command line --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--fresh", action="store_true", help="refit even where cached")
    parser.add_argument("--epochs-scvi", type=int, help="SCVI max_epochs (default: its own)")
    parser.add_argument("--epochs-ours", type=int, help="train.epochs (default: the config's)")
    parser.add_argument("--threads", type=int, help="default: config.yml annotation_threads")
    parser.add_argument("--smoke", action="store_true", help="1 seed, 2 epochs each, all sets")
    parser.add_argument("--cache", type=Path, help="cache folder (default results/bench_panel)")
    # internal: a child process fits one method
    for flag in ("--one", "--set", "--pre", "--folder"):
        parser.add_argument(flag, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.epochs_ours, args.epochs_scvi = [0], 2, 2
    if args.cache is None:
        args.cache = CACHE / "smoke" if args.smoke else CACHE
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.one is not None:
        run_one(args)
        return
    start = time.perf_counter()
    notes: set[str] = set()
    results = {}
    for name in args.sets:
        folder = args.cache / name
        results[name] = []
        for seed in args.seeds:
            try:
                obs, latents = ensure_fits(name, seed, args, folder)
                results[name].append(score_seed(name, seed, obs, latents, notes))
            except Exception as exc:  # one failed fit leaves the others' rows; rerun resumes
                print(f"[bench_panel] {name} seed {seed}: {exc}", file=sys.stderr, flush=True)
                notes.add(f"{name} seed {seed} failed ({type(exc).__name__}: {exc})")
    table = format_table(results, table_header(args, notes))
    args.cache.mkdir(parents=True, exist_ok=True)
    (args.cache / "table.md").write_text(table)
    print(table)
    minutes = (time.perf_counter() - start) / 60
    print(f"[bench_panel] {minutes:.1f} min; table in {args.cache / 'table.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
