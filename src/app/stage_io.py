"""Reading what earlier stages wrote, one element at a time; a missing or broken file names the
stage that writes it (used by the stages of ``src.app.stages``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from src.app.core.data.keys import CATEGORIES_KEY, LABEL_KEY_KEY, LATENT_KEY, PROBA_KEY
from src.app.errors import AppError, DataError


def read_element(path: str | Path, key: str, what: str, stage: str) -> Any:
    """One element (``obs``, ``X``, ...) of an h5ad without loading the rest; a missing or broken
    file names the ``stage`` that writes it."""
    import anndata as ad
    import h5py

    from src.app.core.data.h5ad import check_sparse

    try:
        with h5py.File(path, "r") as f:
            element = ad.io.read_elem(f[key])
        check_sparse(element, str(path), key)
        return element
    except AppError:
        raise
    except Exception as exc:  # the readers raise many types (OSError, KeyError, ValueError...)
        raise DataError(
            f"could not read {what} of {path}: {exc}; run the {stage} stage first"
        ) from None


def read_embedding(path: str | Path) -> tuple[np.ndarray, Any, Any]:
    """The embed stage's ``(latent, .obs, head)``: ``head`` is the classifier head's ``(label
    key, class probabilities, class names)``, or None for a model without one."""
    import anndata as ad
    import h5py

    try:
        with h5py.File(path, "r") as f:
            latent = np.asarray(f[f"obsm/{LATENT_KEY}"])
            obs = ad.io.read_elem(f["obs"])
            head = None
            if f"obsm/{PROBA_KEY}" in f:
                head = (
                    str(ad.io.read_elem(f[f"uns/{LABEL_KEY_KEY}"])),
                    np.asarray(f[f"obsm/{PROBA_KEY}"]),
                    [str(c) for c in ad.io.read_elem(f[f"uns/{CATEGORIES_KEY}"])],
                )
    except AppError:
        raise
    except Exception as exc:  # as in read_element
        raise DataError(
            f"could not read the embedding {path}: {exc}; run the embed stage first"
        ) from None
    _check_embedding(path, latent, len(obs), head)
    return latent, obs, head


def _check_embedding(path: str | Path, latent: np.ndarray, n_cells: int, head: Any) -> None:
    """A latent (and class probabilities, one column per class) of one finite row per cell."""
    arrays = {"latent": latent, "class probabilities": head[1] if head else None}
    for name, values in arrays.items():
        if values is None:
            continue
        fits = values.ndim == 2 and values.shape[0] == n_cells and values.dtype.kind == "f"
        if not fits or not np.isfinite(values).all():
            raise DataError(
                f"the embedding {path} is damaged: its {name} ({values.shape}, {values.dtype}) "
                f"are not finite numbers for {n_cells} cells; run the embed stage again"
            )
    if head and (not head[0] or head[1].shape[1] != len(head[2])):
        raise DataError(
            f"the embedding {path} is damaged: its classifier head (label key {head[0]!r}, "
            f"{len(head[2])} classes) does not fit its probabilities; run the embed stage again"
        )


def read_json(path: str | Path, *, stage: str) -> Any:
    """A JSON result; a missing or broken file names the ``stage`` that writes it."""
    import json

    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} could not be read ({exc}); run the {stage} stage first") from None
