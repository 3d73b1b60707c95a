"""gpu_check's children: one measurement per process (peak memory per process, no leaked
settings), each started as ``python bench/gpu_check.py --child KIND ...``, which prints its
result as one ``gpu_check_runner.RESULT_PREFIX`` line: ``pbmc`` (ours trained on PBMC 3k and
scored), ``scale`` (two epochs on the synthetic counts, dense or sparse), ``scvi`` (one SCVI
epoch), ``prep`` (PBMC 3k through the preprocess stage) and ``write`` (the synthetic counts
written). The sizes they share with the parent (``GENES``, ``DENSITY``, ``SCALE_EPOCHS``) are
defined here.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

from bench._child import peak_rss_mb

ROOT = Path(__file__).resolve().parents[1]
LABEL_KEY = "cell_type_coarse"
GENES, DENSITY = 2000, 0.1
SCALE_EPOCHS = 2
STREAM_VRAM_FRACTION = 1e-6  # of the VRAM for the data: the dense matrix does not fit
RAM_MARGIN = 1.05
GIB = 1 << 30


def machine_profile(device: str, threads: int) -> Any:
    """config.yml (its template where the machine has none) with this check's threads and the
    GPU's memory on CUDA, none on the CPU (what a CPU machine's profile says)."""
    from src.app.machine import load_machine_profile

    path = ROOT / "config.yml"
    profile = load_machine_profile(path if path.exists() else ROOT / "config.yml.example")
    vram = 0.0
    if device == "cuda":
        import torch

        vram = torch.cuda.get_device_properties(0).total_memory / GIB
    return dataclasses.replace(profile, annotation_threads=threads, gpu_vram_gb=vram)


def device_facts(device: str) -> dict[str, Any]:
    """Peak VRAM (GiB) and the device's name, after a sync."""
    import torch

    if device != "cuda":
        return {"peak_vram_gb": None, "device_name": "CPU", "torch": torch.__version__}
    torch.cuda.synchronize()
    return {
        "peak_vram_gb": torch.cuda.max_memory_allocated() / GIB,
        "device_name": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
    }


def pbmc_config(device: str) -> Any:
    """config/default.yaml on ``device``, scored on the coarse labels only."""
    from bench import training_worker

    cfg = training_worker.load_cfg()
    return dataclasses.replace(
        cfg,
        train=dataclasses.replace(cfg.train, device=device),
        eval=dataclasses.replace(cfg.eval, label_keys=(LABEL_KEY,)),
    )


def child_pbmc(args: argparse.Namespace) -> dict[str, Any]:
    """Train our model on the preprocessed PBMC 3k and score it as bench_training does."""
    from bench import training_worker
    from src.app.core.model.runtime import runtime_for

    cfg = pbmc_config(args.device)
    runtime = runtime_for(cfg, profile=machine_profile(args.device, args.threads))
    rule_autocast, default_epochs = runtime.autocast, runtime.epochs
    runtime = dataclasses.replace(
        runtime,
        autocast=args.autocast and args.device == "cuda",
        epochs=args.epochs or runtime.epochs,
    )
    data, history, seconds, latent, predicted = training_worker.fit_ours(cfg, runtime, args.pre)
    f1 = training_worker.f1_table(latent, data.obs, cfg)[LABEL_KEY]
    return training_worker.result_row(
        "ours",
        seconds,
        len(history),
        device=runtime.device,
        autocast=runtime.autocast,
        rule_autocast=rule_autocast,
        default_epochs=default_epochs,
        batch_size=runtime.batch_size,
        threads=runtime.threads,
        knn_f1=f1["knn"],
        head_f1=training_worker.joint_f1(data.obs, predicted, cfg),
        peak_rss_mb=peak_rss_mb(),
        **device_facts(runtime.device),
    )


def layout_limits(layout: str, runtime: Any, path: Path) -> dict[str, float]:
    """``max_ram_gb`` and ``gpu_memory_fraction`` that make the memory plan choose ``layout``
    (``dense`` or ``sparse``) for the matrix in ``path``, from the plan's own size estimates."""
    from src.app.core.data.h5ad import StoredMatrix
    from src.app.core.data.row_store import DATA_MEMORY_SHARE, device_memory, plan_memory

    stored = StoredMatrix.open(path, "X", what="synthetic data")
    plan = plan_memory(
        n_cells=stored.shape[0],
        n_genes=stored.shape[1],
        nnz=stored.nnz,
        runtime=runtime,
        vram_bytes=device_memory(runtime),
    )
    both = (plan.dense_bytes + plan.sparse_bytes) / DATA_MEMORY_SHARE / GIB * RAM_MARGIN
    limits = {"max_ram_gb": max(runtime.max_ram_gb, both)}
    if layout == "sparse" and runtime.device == "cuda":
        limits["gpu_memory_fraction"] = STREAM_VRAM_FRACTION
    elif layout == "sparse":
        # room for the CSR and half the dense matrix: the CSR fits, the two together do not
        half = plan.sparse_bytes + plan.dense_bytes // 2
        limits["max_ram_gb"] = half / DATA_MEMORY_SHARE / GIB
    return limits


def child_scale(args: argparse.Namespace) -> dict[str, Any]:
    """Two epochs on the synthetic counts with the matrix where ``args.layout`` says."""
    from src.app.config import config_from_dict
    from src.app.core.data_adapter import DataAdapter
    from src.app.core.model.runtime import runtime_for
    from src.app.core.model_adapter import ModelAdapter

    cfg = config_from_dict(
        {
            "data": {"labels": None},
            "train": {"epochs": SCALE_EPOCHS, "device": args.device},
            "annotation": {"pseudo_labels": False},  # no kNN graph over 1M cells mid-run
        }
    )
    runtime = runtime_for(cfg, profile=machine_profile(args.device, args.threads))
    runtime = dataclasses.replace(runtime, **layout_limits(args.layout, runtime, args.path))
    start = time.perf_counter()
    data = DataAdapter(cfg, runtime=runtime, path=args.path)
    loaded = time.perf_counter()
    if data.layout != args.layout:
        raise SystemExit(f"the memory plan chose {data.layout}, not {args.layout}")
    history = ModelAdapter(cfg, runtime=runtime).fit(data)
    epoch_s = history[-1]["seconds"]
    n_train = data.dataset_info()["n_train"]
    return {
        "n_cells": data.n_cells,
        "device": runtime.device,
        "layout": data.layout,
        "plan": data.plan.describe(),
        "batch_size": runtime.batch_size,
        "threads": runtime.threads,
        "load_s": loaded - start,
        "fit_s": time.perf_counter() - loaded,
        "epoch_s": epoch_s,
        "cells_per_s": n_train / epoch_s,
        "train_loss": history[-1]["train_loss"],
        "peak_rss_mb": peak_rss_mb(),
        **device_facts(runtime.device),
    }


def scvi_epoch(adata: Any, device: str) -> float:
    """Seconds of one SCVI training epoch (its defaults) on ``adata``'s counts layer, timed by
    a callback from the epoch's start to its end."""
    import scvi
    from lightning.pytorch import Callback

    from src.app.core.data.preprocess import COUNTS_LAYER

    class EpochTimer(Callback):
        def on_train_epoch_start(self, *_: Any) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_end(self, *_: Any) -> None:
            self.seconds = time.perf_counter() - self.start

    scvi.model.SCVI.setup_anndata(adata, layer=COUNTS_LAYER)
    timer = EpochTimer()
    scvi.model.SCVI(adata).train(
        max_epochs=1,
        accelerator="gpu" if device == "cuda" else "cpu",
        callbacks=[timer],
        enable_progress_bar=False,
    )
    return timer.seconds


def child_scvi(args: argparse.Namespace) -> dict[str, Any]:
    """One SCVI epoch on the preprocessed PBMC 3k and on the synthetic counts."""
    import anndata as ad
    import scvi
    import torch

    torch.set_num_threads(args.threads)
    scvi.settings.seed = 0
    seconds = {}
    for name, path in (("pbmc", args.pre), ("synthetic", args.path)):
        if path is not None:
            seconds[name] = scvi_epoch(ad.read_h5ad(path), args.device)
    return {"version": scvi.__version__, "epoch_s": seconds, "device": args.device}


def child_prep(args: argparse.Namespace) -> dict[str, Any]:
    from bench import bench_training

    start = time.perf_counter()
    n_cells, n_genes = bench_training.preprocess_to(args.data, args.pre)
    return {"n_cells": n_cells, "n_genes": n_genes, "seconds": time.perf_counter() - start}


def child_write(args: argparse.Namespace) -> dict[str, Any]:
    from bench import bench_scale

    start = time.perf_counter()
    bench_scale.write_synthetic(
        args.path, n_cells=args.cells, n_genes=GENES, density=DENSITY, compression=None, seed=0
    )
    return {"seconds": time.perf_counter() - start}


CHILDREN = {
    "pbmc": child_pbmc,
    "scale": child_scale,
    "scvi": child_scvi,
    "prep": child_prep,
    "write": child_write,
}
