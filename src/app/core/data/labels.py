"""Cell labels as class codes, and which cells' labels count as known (the visible draw shared by
the classifier head, the evaluation and the annotated output)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from src.app.config import Config
from src.app.core.data.keys import VISIBLE_KEY


def label_codes(labels: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Class codes per cell (-1 where the label is NaN) and the class names, sorted as strings
    (the order the classifier head, metrics.json and the figures all use)."""
    values = labels.astype("object").to_numpy()
    known = pd.notna(values)
    classes = sorted({str(v) for v in values[known]})
    lookup = {c: i for i, c in enumerate(classes)}
    codes = np.array([lookup[str(v)] if k else -1 for v, k in zip(values, known, strict=True)])
    return codes.astype(int), classes


def draw_visible(codes: np.ndarray, *, fraction: float, seed: int) -> np.ndarray:
    """A seeded, stratified ``fraction`` of the labelled cells (codes >= 0): ``round(fraction *
    n)`` of each class, at least one, so every class has a labelled cell. Also the classifier
    head's draw (``data_adapter.label_codes``)."""
    rng = np.random.default_rng(seed)
    visible = np.zeros(len(codes), dtype=bool)
    for cls in np.unique(codes[codes >= 0]):
        members = np.flatnonzero(codes == cls)
        n_keep = max(1, round(fraction * len(members)))
        visible[rng.choice(members, size=n_keep, replace=False)] = True
    return visible


def visible_cells(obs: pd.DataFrame, cfg: Config) -> np.ndarray:
    """The cells whose label counts as known: those shown to the classifier head (``.obs
    ["label_visible"]`` from the embed stage), else the head's draw (``annotation.label_fraction``
    of ``annotation.label_key``, or of the first ``eval.label_keys`` column)."""
    if VISIBLE_KEY in obs.columns:
        return obs[VISIBLE_KEY].to_numpy(dtype=bool)
    key = cfg.annotation.label_key
    key = key if key in obs.columns else cfg.eval.label_keys[0]
    codes, _ = label_codes(obs[key])
    return draw_visible(codes, fraction=cfg.annotation.label_fraction, seed=cfg.seed)
