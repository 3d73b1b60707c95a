"""Checks of a checkpoint's files before any tensor is built from them (``ModelAdapter.load``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from src.app.config import LIKELIHOODS
from src.app.core.model.nn import NETWORK_DECODERS, VAEConfig
from src.app.errors import CheckpointError


def check_vae_config(
    cfg: VAEConfig,
    gene_names: list[str],
    label_categories: list[str],
    batch_categories: list[str],
    *,
    where: Path,
) -> None:
    """Refuse a network config that could not have been saved by :meth:`ModelAdapter.save`
    (before any tensor is allocated for it)."""
    problems = {
        "n_genes": cfg.n_genes != len(gene_names),
        "latent_dim": not (isinstance(cfg.latent_dim, int) and cfg.latent_dim >= 1),
        "hidden_dims": not all(isinstance(h, int) and h >= 1 for h in cfg.hidden_dims)
        or not cfg.hidden_dims,
        "dropout": not (isinstance(cfg.dropout, int | float) and 0 <= cfg.dropout < 1),
        "likelihood": cfg.likelihood not in LIKELIHOODS,
        "decoder": cfg.decoder not in NETWORK_DECODERS,
        "standardize": not isinstance(cfg.standardize, bool),
        "n_labels": cfg.n_labels != len(label_categories),
        "n_batches": cfg.n_batches != len(batch_categories),
    }
    bad = [key for key, wrong in problems.items() if wrong]
    if bad:
        raise CheckpointError(
            f"checkpoint {where} is inconsistent: vae_config.{bad[0]} = "
            f"{getattr(cfg, bad[0])!r} ({len(gene_names)} gene names, "
            f"{len(label_categories)} label categories)"
        )


def read_json(path: Path, kind: type) -> Any:
    """The JSON value of a checkpoint file, which must be a ``kind`` (dict or list)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"checkpoint file {path} not found; run the train stage first"
        ) from None
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or bad UTF-8
        raise CheckpointError(f"checkpoint file {path} is unreadable: {exc}") from None
    if not isinstance(data, kind):
        raise CheckpointError(f"checkpoint file {path} does not hold a JSON {kind.__name__}")
    return data
