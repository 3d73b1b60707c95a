"""Architecture surgery for a query's new batches (scArches, Lotfollahi et al. 2022): the
network gains one covariate column per new batch, zero at first, and only those columns are
trained, on the query; every reference weight stays as it was (frozen BatchNorm statistics
included), so reference cells embed exactly as before and the query lands in their latent
space. Tensors only: the caller brings minibatches."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from src.app.core.model.nn import VAE
from src.app.core.model.optim import Adam
from src.app.errors import TrainingError


def covariate_layers(module: VAE) -> list[nn.Linear]:
    """The layers whose input ends with the batch one-hot (see :meth:`VAE._with`)."""
    layers = [module.encoder[0], module.x_out]
    if module.cfg.decoder != "linear":
        layers.append(module.decoder[0])
    if module.cfg.likelihood == "zinb":
        layers.append(module.zi_out)
    return layers


def with_new_batches(module: VAE, n_new: int) -> VAE:
    """A copy of ``module`` with ``n_new`` more batch columns (zero weights), whose only
    trainable parameters are those columns; codes ``>= module.cfg.n_batches`` are the new
    batches. The reference's weights never move: a gradient hook zeroes their share."""
    if n_new < 1:
        raise ValueError("with_new_batches needs at least one new batch")
    cfg = dataclasses.replace(module.cfg, n_batches=module.cfg.n_batches + n_new)
    grown = VAE(cfg).to(next(module.parameters()).device)
    old = module.state_dict()
    with torch.no_grad():  # state_dict() tensors share the grown model's storage
        for name, tensor in grown.state_dict().items():
            source = old[name]
            if tensor.shape == source.shape:
                tensor.copy_(source)
            else:  # a covariate layer's weight: the new columns are its last n_new
                tensor.zero_()
                tensor[:, : source.shape[1]] = source
    grown.requires_grad_(False)
    for layer in covariate_layers(grown):
        weight = layer.weight
        mask = torch.zeros_like(weight)
        mask[:, weight.shape[1] - n_new :] = 1.0
        weight.requires_grad_(True)
        weight.register_hook(lambda grad, mask=mask: grad * mask)
    return grown.eval()


def _freeze_statistics(module: VAE) -> None:
    """Training mode (dropout on) but BatchNorm layers keep the reference's statistics."""
    module.train()
    for layer in module.modules():
        if isinstance(layer, nn.BatchNorm1d):
            layer.eval()


def fit_new_batches(
    module: VAE,
    batches: Callable[[], Iterable],
    *,
    epochs: int,
    lr: float,
    grad_clip_norm: float,
) -> list[float]:
    """Train the new batch columns of ``module`` (from :func:`with_new_batches`) on the query:
    ``batches()`` gives one epoch of minibatches with ``x``, ``target``, ``library``, ``labels``
    and ``batch`` (codes in the grown model). Returns the mean loss of each epoch."""
    params = [p for p in module.parameters() if p.requires_grad]
    opt = Adam(params, lr=lr, weight_decay=0.0)  # no decay: it would shrink nothing else
    losses: list[float] = []
    for epoch in range(epochs):
        _freeze_statistics(module)
        total, n = torch.zeros((), dtype=torch.float64, device=params[0].device), 0
        for b in batches():
            terms = module.loss(b.x, b.target, library=b.library, labels=b.labels, batch=b.batch)
            opt.zero_grad()
            terms.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, grad_clip_norm)
            opt.step()
            total += terms.loss.detach().double() * b.n_cells
            n += b.n_cells
        loss = total.item() / max(n, 1)
        if not math.isfinite(loss):
            raise TrainingError(
                f"fitting the query's batches diverged: loss {loss} at epoch {epoch + 1}; "
                "lower map.epochs or train.lr"
            )
        losses.append(loss)
    module.eval()
    return losses
