"""The integer codes the model trains on: the classifier head's visible labels and each cell's
batch (the one-hot covariate of encoder and decoder)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from src.app.config import Config
from src.app.core.data.labels import head_draw, label_codes
from src.app.core.data.preprocess import batch_column
from src.app.errors import DataError


def head_codes(obs: pd.DataFrame, cfg: Config) -> tuple[list[str], np.ndarray]:
    """Label categories and the visible label codes (-1 hidden/unknown): the classifier head's
    draw (:func:`src.app.core.data.labels.head_draw`)."""
    key = cfg.annotation.label_key
    if key is None:
        return [], np.full(len(obs), -1, dtype=np.int64)
    if key not in obs:
        raise DataError(
            f"annotation.label_key '{key}' is not in the data's .obs; available: "
            f"{sorted(map(str, obs.columns))}; set it to null to train without the classifier head"
        )
    all_codes, categories = label_codes(obs[key])
    if not categories:
        raise DataError(f"annotation.label_key '{key}' has no labelled cells (all NaN)")
    if len(categories) < 2:
        raise DataError(
            f"annotation.label_key '{key}' has a single class ({categories[0]!r}); need >= 2"
        )
    visible = head_draw(obs, key, cfg)
    return categories, np.where(visible, all_codes, -1).astype(np.int64)


def batch_codes(
    obs: pd.DataFrame, key: str | None, *, known: list[str] | None, where: str
) -> tuple[list[str], np.ndarray]:
    """Batch categories and each cell's code (cells,): the data's own batches, or ``known``
    (a checkpoint's), where a batch outside them fails with its name; no key: ``[]`` and 0s."""
    if key is None:
        if known:
            raise DataError(
                f"the model was trained with {len(known)} batches but data.batch_key is null; "
                "set data.batch_key to the column it was trained with"
            )
        return [], np.zeros(len(obs), dtype=np.int64)
    column = batch_column(obs, key, where=where)
    categories = [str(c) for c in column.categories] if known is None else list(known)
    codes = pd.Categorical(np.asarray(column, dtype=str), categories=categories).codes
    if (codes < 0).any():
        unknown = sorted({str(c) for c in np.asarray(column, dtype=str)[codes < 0]})
        raise DataError(
            f"data.batch_key '{key}': {int((codes < 0).sum())} cells of the {where} are in "
            f"batches the model was not trained on: {unknown[:5]}; trained on {categories[:10]}"
        )
    return categories, codes.astype(np.int64)
