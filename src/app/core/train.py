"""``run_training``: the train stage's core, config in, checkpoint out, metrics dict back."""

from __future__ import annotations

import time
from pathlib import Path

from src.app.config import Config
from src.app.core.data_adapter import DataAdapter
from src.app.core.model.runtime import runtime_for
from src.app.core.model_adapter import ModelAdapter
from src.app.layout import RunLayout
from src.app.machine import Runtime


def run_training(
    cfg: Config,
    *,
    data_path: str | Path | None = None,
    model_dir: str | Path | None = None,
    runtime: Runtime | None = None,
) -> dict[str, float | int | str]:
    """Train on the preprocessed h5ad and write the checkpoint folder.

    Paths default to the run layout of ``cfg`` (``results/<run_id>/preprocessed.h5ad`` and
    ``results/<run_id>/model``). Returns training metrics as a plain dict.
    """
    layout = RunLayout.of(cfg)
    runtime = runtime if runtime is not None else runtime_for(cfg)
    data = DataAdapter(cfg, runtime=runtime, path=data_path or layout.preprocessed)
    model = ModelAdapter(cfg, runtime=runtime)
    start = time.perf_counter()
    history = model.fit(data)
    seconds = time.perf_counter() - start
    model.save(model_dir or layout.model_dir)
    last = history[-1]
    return {
        **data.dataset_info(),
        "device": runtime.device,
        "data_layout": data.layout,
        "epochs": len(history),
        "train_loss": last["train_loss"],
        "val_loss": last.get("val_loss", float("nan")),
        "seconds": seconds,
        "seconds_per_epoch": seconds / len(history),
    }
