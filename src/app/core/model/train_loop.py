"""The training loop: forward, loss, backward, clip, step, log. Plain and on one screen."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from src.app.config import Config
from src.app.core.data_adapter import Batch, DataAdapter
from src.app.core.model.nn import VAE, LossTerms
from src.app.core.model.optim import Adam
from src.app.core.model.pseudo_labels import pseudo_labels
from src.app.errors import TrainingError
from src.app.machine import Runtime

log = logging.getLogger(__name__)


def kl_weight(epoch: int, *, warmup_epochs: int, final: float = 1.0) -> float:
    """Linear KL warm-up: ``final / warmup`` at the first epoch up to ``final`` at
    ``warmup_epochs`` (0: always ``final``)."""
    if warmup_epochs <= 0:
        return final
    return final * min(1.0, (epoch + 1) / warmup_epochs)


class EarlyStopping:
    """Stop when the monitored loss has not improved for ``patience`` epochs (0: never) and
    keep a copy of the best weights."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best = float("inf")
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None

    def step(self, loss: float, epoch: int, module: torch.nn.Module) -> bool:
        """Record ``loss`` of ``epoch``; returns True when training should stop. The best
        weights are copied only where they will be restored (patience > 0)."""
        if loss < self.best:
            self.best, self.best_epoch = loss, epoch
            if self.patience > 0:
                self.best_state = copy.deepcopy(module.state_dict())
        return self.patience > 0 and epoch - self.best_epoch >= self.patience


def _autocast(runtime: Runtime) -> contextlib.AbstractContextManager:
    if runtime.autocast and runtime.device == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def batch_loss(module: VAE, batch: Batch, cfg: Config, *, kl: float) -> LossTerms:
    return module.loss(
        batch.x,
        batch.target,
        library=batch.library,
        labels=batch.labels,
        batch=batch.batch,
        label_weights=batch.label_weights,
        kl_weight=kl,
        classification_weight=cfg.annotation.classification_weight,
    )


def on_device(x: torch.Tensor, batch: torch.Tensor | None, device: str | torch.device) -> tuple:
    """An encoder input and its batch codes (or None) on ``device``."""
    return x.to(device), None if batch is None else batch.to(device)


@torch.inference_mode()
def encode_means(
    module: VAE, inputs: Iterable[tuple[torch.Tensor, torch.Tensor | None]], device: str
) -> np.ndarray:
    """Latent means (cells, latent_dim) of the encoder inputs and batch codes ``inputs``, chunk
    by chunk (codes None for a model without batches)."""
    module.eval()
    # kept on the device until the end: one copy to the host, not one (and a sync) per chunk
    means = [module.inference(*on_device(x, b, device))[0].float() for x, b in inputs]
    if not means:
        return np.zeros((0, module.cfg.latent_dim), dtype=np.float32)
    return torch.cat(means).cpu().numpy()


def refresh_pseudo_labels(module: VAE, data: DataAdapter, cfg: Config, runtime: Runtime) -> dict:
    """Label spreading from the visible labels over the current latent's kNN graph gives every
    other cell a pseudo-label and a certainty weight for the head's loss; returns how many
    cells got one and their mean certainty (for the history)."""
    inputs = ((b.x, b.batch) for b in data.iter_all_batches())
    latent = encode_means(module, inputs, runtime.device)
    n_classes = len(data.label_categories)
    codes, weights = pseudo_labels(
        latent,
        data.visible_codes,
        n_classes,
        n_neighbors=cfg.annotation.pseudo_label_neighbors,
        device=runtime.device,
    )
    data.set_pseudo_labels(codes, weights)
    given = weights > 0
    certainty = float(weights[given].mean()) if given.any() else 0.0
    return {"pseudo_labelled": int(given.sum()), "pseudo_certainty": certainty}


@torch.no_grad()
def mean_loss(module: VAE, batches: Iterator[Batch], cfg: Config, runtime: Runtime) -> float | None:
    """Cell-weighted mean of the loss at the final KL weight over ``batches``; None if empty.
    Summed in float64 on the device (the arithmetic of Python floats, without a sync per
    batch), read once at the end."""
    module.eval()
    total, n = torch.zeros((), dtype=torch.float64, device=runtime.device), 0
    for batch in batches:
        with _autocast(runtime):
            terms = batch_loss(module, batch, cfg, kl=cfg.train.kl_weight)
        total += terms.loss.double() * batch.n_cells
        n += batch.n_cells
    return total.item() / n if n else None


def train_vae(
    module: VAE, data: DataAdapter, *, runtime: Runtime, cfg: Config
) -> list[dict[str, float]]:
    """Fit ``module``; returns the per-epoch history. With early stopping (patience > 0 and a
    validation split) the best weights by validation loss are restored at the end."""
    tc = cfg.train
    opt = Adam(module.parameters(), lr=runtime.lr, weight_decay=tc.weight_decay)
    stopper = EarlyStopping(tc.early_stopping_patience)
    history: list[dict[str, float]] = []
    refresh_at = set(cfg.annotation.pseudo_label_epochs(runtime.epochs))
    pseudo: dict = {}
    bar = tqdm(range(runtime.epochs), desc="train", unit="epoch", mininterval=1.0)
    for epoch in bar:
        start = time.perf_counter()
        if epoch in refresh_at:
            pseudo = refresh_pseudo_labels(module, data, cfg, runtime)
        kl = kl_weight(epoch, warmup_epochs=tc.kl_warmup_epochs, final=tc.kl_weight)
        module.train()
        sums = torch.zeros(4, device=runtime.device)  # loss, reconstruction, kl, classification
        n_cells = 0
        for batch in data.iter_train_batches():
            with _autocast(runtime):
                terms = batch_loss(module, batch, cfg, kl=kl)
            opt.zero_grad()
            terms.loss.backward()
            torch.nn.utils.clip_grad_norm_(opt.params, tc.grad_clip_norm)
            opt.step()
            parts = torch.stack([terms.loss, terms.reconstruction, terms.kl, terms.classification])
            sums += parts.detach() * batch.n_cells
            n_cells += batch.n_cells
        loss, recon, kl_term, ce = (sums / max(n_cells, 1)).tolist()
        if not math.isfinite(loss):
            raise TrainingError(
                f"training diverged: the loss is {loss} at epoch {epoch + 1} (learning rate "
                f"{runtime.lr:g}); lower train.lr (or config.yml's learning_rate) or "
                "train.grad_clip_norm"
            )
        row = {"epoch": epoch + 1, "train_loss": loss, "reconstruction": recon, "kl": kl_term}
        row |= {"classification": ce, "kl_weight": kl, **pseudo}
        val = mean_loss(module, data.iter_val_batches(), cfg, runtime)
        if val is not None:
            row["val_loss"] = val
        row["seconds"] = time.perf_counter() - start
        history.append(row)
        bar.set_postfix(loss=f"{loss:.1f}", val=f"{val:.1f}" if val is not None else "-")
        if val is not None and stopper.step(val, epoch, module):
            log.info("early stopping at epoch %d; best epoch %d", epoch + 1, stopper.best_epoch + 1)
            break
    if stopper.patience > 0 and stopper.best_state is not None:
        module.load_state_dict(stopper.best_state)
    module.eval()
    return history
