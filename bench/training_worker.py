"""bench_training's worker: one method (ours or scvi-tools' SCVI + SCANVI) trained and scored in
a child process, and the helpers gpu_check's PBMC children share with it (the default config,
fitting ours, the F1 scores, the result row).

The worker is started as ``python bench/bench_training.py --worker METHOD --pre H5AD
[--epochs-scvi N]`` and prints its row as one ``RESULT_PREFIX`` line (``_child.print_result``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench._child import peak_rss_mb, print_result

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_CONFIG = ROOT / "config" / "default.yaml"
RESULT_PREFIX = "BENCH_TRAINING_RESULT "


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


# --- the worker: one method each --------------------------------------------------------------


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
    print_result(RESULT_PREFIX, row)
