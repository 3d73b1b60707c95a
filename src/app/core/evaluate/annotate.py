"""What the evaluate stage adds to the preprocessed data to make annotated.h5ad (scanpy's ``tl``):
the latent and its UMAP, the PCA baseline, the labels predicted from the latent by the same fits
that metrics.json scores, the classifier head's predictions, colours, config and metrics. The
result opens with ``scanpy.read_h5ad`` and plots with ``sc.pl.umap`` as it is. Never imports
torch."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from src.app.config import Config, config_to_dict
from src.app.core.data.colours import UNLABELLED_COLOUR, category_colours
from src.app.core.data.keys import (
    CONFIG_UNS,
    LATENT_KEY,
    METRICS_UNS,
    PCA_KEY,
    VISIBLE_KEY,
    colours_key,
    confidence_key,
    predicted_key,
)
from src.app.core.data.labels import label_codes
from src.app.core.evaluate.run import Evaluation
from src.app.core.evaluate.umap import umap_entries

HARMONY_KEY = "X_pca_harmony"  # .obsm: the PCA after Harmony (scanpy's harmony_integrate name)


@dataclass
class Additions:
    """``.obs`` columns, ``.obsm`` / ``.obsp`` matrices and ``.uns`` entries to add to an h5ad."""

    obs: dict[str, Any] = field(default_factory=dict)
    obsm: dict[str, Any] = field(default_factory=dict)
    obsp: dict[str, Any] = field(default_factory=dict)
    uns: dict[str, Any] = field(default_factory=dict)


def _label_columns(
    out: Additions, obs: pd.DataFrame, key: str, predictions: dict[str, np.ndarray]
) -> None:
    """The label column ``key`` as a categorical of sorted class names, the latent's predictions
    and confidences for each method, the head's ``predicted_<key>`` recast to the same classes,
    and one colour per class for each of these columns."""
    codes, classes = label_codes(obs[key])
    out.obs[key] = pd.Categorical.from_codes(codes, categories=classes)
    columns = [key]
    for method, proba in predictions.items():
        column = predicted_key(key, method)
        out.obs[column] = pd.Categorical.from_codes(proba.argmax(axis=1), categories=classes)
        out.obs[confidence_key(key, method)] = proba.max(axis=1).astype(np.float32)
        columns.append(column)
    head = predicted_key(key)  # the classifier head's, from the embed stage
    if head in obs.columns:
        values = obs[head].astype("object")
        if set(values.dropna().astype(str)) <= set(classes):
            out.obs[head] = pd.Categorical(values.astype(str), categories=classes)
            columns.append(head)
    colours = category_colours(classes)
    for column in columns:
        categories = out.obs[column].categories
        out.uns[colours_key(column)] = [colours.get(c, UNLABELLED_COLOUR) for c in categories]


def latent_umap(latent: np.ndarray, neighbours: tuple[np.ndarray, np.ndarray], cfg: Config):
    """The UMAP of the latent from its neighbours (:func:`latent_neighbours`), as annotated.h5ad
    stores it: ``(obsm, obsp, uns)`` entries of :func:`umap_entries`."""
    idx, dist = neighbours
    return umap_entries(latent, idx, dist, cfg.viz, seed=cfg.seed, use_rep=LATENT_KEY)


def annotations(
    latent: np.ndarray,
    obs: pd.DataFrame,
    evaluation: Evaluation,
    cfg: Config,
    *,
    carried: tuple[str, ...] = (),
    umap: tuple[dict, dict, dict] | None = None,
) -> Additions:
    """annotated.h5ad's additions to the preprocessed data: ``.obsm["X_vae"]`` and
    ``["X_umap"]`` (with scanpy's neighbour graph in ``.obsp`` and ``.uns``), ``.obsm["X_pca"]``
    (the baseline, unless ``baseline.method`` is none) and ``["X_pca_harmony"]`` (after Harmony,
    with a batch key), ``.obs["label_visible"]``, for each key of
    ``eval.label_keys`` the columns of :func:`_label_columns`, and ``.uns["config"]`` /
    ``.uns["metrics"]`` as JSON text. ``obs``: the data's ``.obs`` joined with the embed stage's
    columns, which are named in ``carried`` (the head's predictions and confidence) and kept as
    they are unless recast above; ``umap``: :func:`latent_umap`'s entries, computed here when
    not given."""
    out = Additions(obsm={LATENT_KEY: latent})
    obsm, obsp, uns = umap or latent_umap(latent, evaluation.neighbours, cfg)
    out.obsm.update(obsm)
    out.obsp.update(obsp)
    out.uns.update(uns)
    if evaluation.pca is not None:
        out.obsm[PCA_KEY] = evaluation.pca
    if evaluation.harmony is not None:
        out.obsm[HARMONY_KEY] = evaluation.harmony
    out.obs[VISIBLE_KEY] = evaluation.visible
    for key in cfg.eval.label_keys:
        _label_columns(out, obs, key, evaluation.predictions.get(key, {}))
    for column in carried:
        out.obs.setdefault(column, obs[column].to_numpy())
    out.uns[CONFIG_UNS] = json.dumps(config_to_dict(cfg))
    out.uns[METRICS_UNS] = json.dumps(evaluation.metrics)
    return out
