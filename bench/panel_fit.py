"""bench_panel's children: one method fitted per process (``ours``, ``scvi``, or ``pca`` with
``harmony`` on batch sets), started as ``python bench/bench_panel.py --one METHOD ...``; each
writes its latents to the cache and prints its rows as one ``RESULT_PREFIX`` line.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._child import print_result
from bench.panel_cache import cache_paths
from bench.panel_sets import SETS, bench_profile, set_config

RESULT_PREFIX = "BENCH_PANEL_RESULT "


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM of /proc/self/status, in kB). ``ru_maxrss`` of a
    child started by fork + exec also counts the parent's peak at the fork, so it is not used
    where /proc is available."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def fit_ours(args: argparse.Namespace) -> dict[str, Any]:
    """The train stage (timed: seconds to a trained model), then the embed stage. The modules
    the stage imports are imported first, so the time leaves imports out as scvi's does."""
    import anndata  # noqa: F401
    import safetensors.torch  # noqa: F401

    import src.app.core.train  # noqa: F401
    from src.app import stages

    cfg = set_config(args.set, args.seed, args.epochs_ours)
    profile = bench_profile(cfg, args.threads)
    work = Path(args.pre).parent
    model_dir, latent = work / f"model_seed{args.seed}", work / f"latent_seed{args.seed}.npy"
    start = time.perf_counter()
    result = stages.train(cfg, input=args.pre, model_dir=model_dir, profile=profile)
    seconds = time.perf_counter() - start
    rss = peak_rss_mb()
    stages.embed(
        cfg, model_dir=model_dir, input=args.pre, latent=latent,
        output=work / f"embedded_seed{args.seed}.h5ad", profile=profile,
    )  # fmt: skip
    extra = {"fit_seconds": result["seconds"], "device": result["device"]}
    return {"ours": (np.load(latent), seconds, int(result["epochs"]), rss, extra)}


def fit_scvi(args: argparse.Namespace) -> dict[str, Any]:
    """scvi-tools' SCVI, its defaults; timed from setup_anndata to the end of training."""
    import anndata as ad
    import scvi
    import torch

    from src.app.core.data.preprocess import COUNTS_LAYER
    from src.app.machine import resolve_runtime

    cfg = set_config(args.set, args.seed, None)
    runtime = resolve_runtime(
        bench_profile(cfg, args.threads), cfg.train, cuda_available=torch.cuda.is_available()
    )
    scvi.settings.seed = args.seed
    torch.set_num_threads(runtime.threads)
    adata = ad.read_h5ad(args.pre)
    kwargs: dict[str, Any] = {"accelerator": "gpu" if runtime.device == "cuda" else "cpu"}
    if args.epochs_scvi is not None:
        kwargs["max_epochs"] = args.epochs_scvi
    start = time.perf_counter()
    scvi.model.SCVI.setup_anndata(adata, layer=COUNTS_LAYER, batch_key=SETS[args.set].batch_key)
    model = scvi.model.SCVI(adata)
    model.train(**kwargs)
    seconds = time.perf_counter() - start
    rss = peak_rss_mb()
    latent = model.get_latent_representation()
    epochs = len(model.history["elbo_train"])
    extra = {"device": runtime.device, "version": scvi.__version__}
    return {"scvi": (latent, seconds, epochs, rss, extra)}


def fit_pca(args: argparse.Namespace) -> dict[str, Any]:
    """The PCA baseline of the log-normalised HVGs, then Harmony on it where there are batches
    (its seconds include the PCA's)."""
    import anndata as ad

    from src.app.core.evaluate import baseline
    from src.app.stages import dense_budget

    cfg = set_config(args.set, args.seed, None)
    profile = bench_profile(cfg, args.threads)
    adata = ad.read_h5ad(args.pre)
    start = time.perf_counter()
    pca = baseline.pca_representation(
        adata.X, cfg.baseline, seed=args.seed, max_bytes=dense_budget(profile)
    )
    seconds = time.perf_counter() - start
    out = {"pca": (pca, seconds, 0, peak_rss_mb(), {})}
    batch_key = SETS[args.set].batch_key
    if batch_key is not None and hasattr(baseline, "harmony"):
        corrected = baseline.harmony(pca, adata.obs[batch_key].to_numpy(), seed=args.seed)
        out["harmony"] = (corrected, time.perf_counter() - start, 0, peak_rss_mb(), {})
    return out


def run_one(args: argparse.Namespace) -> None:
    """Child mode: fit one method, write its latents (the parent writes the records)."""
    fit = {"ours": fit_ours, "scvi": fit_scvi, "pca": fit_pca}[args.one]
    rows = {}
    for method, (latent, seconds, epochs, rss, extra) in fit(args).items():
        npz, _ = cache_paths(Path(args.folder), method, args.seed)
        np.savez_compressed(npz, latent=np.asarray(latent, dtype=np.float32))
        rows[method] = {"seconds": seconds, "epochs": epochs, "peak_rss_mb": rss, **extra}
    print_result(RESULT_PREFIX, rows)
