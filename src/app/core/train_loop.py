"""The training loop: forward, loss, backward, clip, step, log. Plain and on one screen."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch
from tqdm.auto import tqdm

from src.app.config import TrainConfig
from src.app.core.data_adapter import Batch, DataAdapter
from src.app.core.nn import VAE
from src.app.machine import Runtime

GRAD_CLIP_NORM = 10.0


def _autocast(runtime: Runtime) -> contextlib.AbstractContextManager:
    if runtime.autocast and runtime.device == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def mean_loss(module: VAE, batches: Iterator[Batch], runtime: Runtime) -> float | None:
    """Cell-weighted mean loss over ``batches`` in eval mode; None when there are none."""
    module.eval()
    total, n = 0.0, 0
    for batch in batches:
        with _autocast(runtime):
            terms = module.loss(batch.x)
        total += float(terms.loss) * batch.x.shape[0]
        n += batch.x.shape[0]
    return total / n if n else None


def train_vae(
    module: VAE, data: DataAdapter, *, runtime: Runtime, cfg: TrainConfig
) -> list[dict[str, float]]:
    """Fit ``module`` for ``runtime.epochs`` epochs; returns the per-epoch history."""
    opt = torch.optim.Adam(module.parameters(), lr=runtime.lr, weight_decay=cfg.weight_decay)
    history: list[dict[str, float]] = []
    bar = tqdm(range(runtime.epochs), desc="train", unit="epoch", mininterval=1.0)
    for epoch in bar:
        start = time.perf_counter()
        module.train()
        sums = torch.zeros(3, device=runtime.device)  # loss, reconstruction, kl (cell sums)
        n_cells = 0
        for batch in data.iter_train_batches():
            with _autocast(runtime):
                terms = module.loss(batch.x)
            opt.zero_grad(set_to_none=True)
            terms.loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), GRAD_CLIP_NORM)
            opt.step()
            n = batch.x.shape[0]
            sums += torch.stack([terms.loss, terms.reconstruction, terms.kl]).detach() * n
            n_cells += n
        loss, recon, kl = (sums / max(n_cells, 1)).tolist()
        val = mean_loss(module, data.iter_val_batches(), runtime)
        row = {"epoch": epoch + 1, "train_loss": loss, "reconstruction": recon, "kl": kl}
        if val is not None:
            row["val_loss"] = val
        row["seconds"] = time.perf_counter() - start
        history.append(row)
        bar.set_postfix(loss=f"{loss:.2f}", val=f"{val:.2f}" if val is not None else "-")
    module.eval()
    return history
