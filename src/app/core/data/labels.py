"""Cell labels as class codes, and which cells' labels count as known (the visible draw shared by
the classifier head, the evaluation and the annotated output)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from src.app.config import Config
from src.app.core.data.keys import VISIBLE_KEY
from src.app.errors import DataError


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
    head's draw (``codes.head_codes``)."""
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
    return head_draw(obs, key, cfg)


def head_draw(obs: pd.DataFrame, key: str, cfg: Config) -> np.ndarray:
    """The classifier head's visible labels (cells,): a seeded, stratified
    ``annotation.label_fraction`` of the labelled cells of ``obs[key]``; with
    ``eval.transfer_key`` drawn among the reference cells only, so the cells that cross-batch
    transfer predicts never show their labels to the model."""
    codes, _ = label_codes(obs[key])
    if cfg.eval.transfer_key is not None:
        reference = transfer_split(obs, cfg.eval.transfer_key, cfg.eval.transfer_reference)
        codes = np.where(reference, codes, -1)
    return draw_visible(codes, fraction=cfg.annotation.label_fraction, seed=cfg.seed)


def strings(values: pd.Series) -> np.ndarray:
    """The values as strings, None where missing."""
    raw = values.astype("object").to_numpy()
    return np.array([str(v) if pd.notna(v) else None for v in raw], dtype=object)


def transfer_split(obs: pd.DataFrame, transfer_key: str, reference: Sequence[str]) -> np.ndarray:
    """Which cells are in the reference (their ``obs[transfer_key]`` is one of ``reference``);
    fails naming the key and the available values when the column or a value is missing, or
    when no cell is left to predict."""
    if transfer_key not in obs.columns:
        raise DataError(
            f"eval.transfer_key '{transfer_key}' is not a column of the data's .obs; "
            f"available: {sorted(map(str, obs.columns))}"
        )
    values = strings(obs[transfer_key])
    available = sorted({v for v in values if v is not None})
    missing = [str(r) for r in reference if str(r) not in available]
    if missing:
        raise DataError(
            f"eval.transfer_reference {missing} not among the values of .obs['{transfer_key}'] "
            f"(eval.transfer_key); available: {available}"
        )
    in_reference = np.isin(values.astype(str), [str(r) for r in reference]) & pd.notna(values)
    if in_reference.all():
        raise DataError(
            f"eval.transfer_reference {list(reference)} holds every cell of .obs['{transfer_key}']"
            f"; leave out a value to predict (available: {available})"
        )
    return in_reference
