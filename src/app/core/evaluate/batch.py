"""Batch integration metrics and cross-batch label transfer: scib-metrics' scores of how well a
representation mixes batches (batch correction) and keeps cell types apart (bio conservation),
and kNN / logistic regression trained on some batches' labels and scored on the other batches.
scib-metrics (jax) is imported only when these run; never imports torch."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from src.app.core.data.labels import strings, transfer_split
from src.app.core.evaluate.classify import METHODS, fit_predict
from src.app.core.evaluate.metrics import macro_f1
from src.app.core.evaluate.representation import labelled
from src.app.errors import DataError

log = logging.getLogger(__name__)

# scib-metrics' Benchmarker defaults (0.5.10) by type, named as its results table names them
# (get_results(clean_names=False)); nmi / ari are of k-means clusters, its default (leiden is off)
BIO_CONSERVATION = (
    "isolated_labels",
    "nmi_ari_cluster_labels_kmeans_nmi",
    "nmi_ari_cluster_labels_kmeans_ari",
    "silhouette_label",
    "clisi_knn",
)
# kbet_per_label, the Benchmarker's fifth, is left out: its diffusion-map neighbour search runs
# pynndescent, whose numba compilation alone took 70-130 s per process on 2 cpu cores (the other
# metrics together: about 30 s), and scib-metrics itself says it only approximates scib's kBET
BATCH_CORRECTION = ("bras", "ilisi_knn", "graph_connectivity", "pcr_comparison")
SKIPPED = {
    "kbet_per_label": "numba compilation of its pynndescent search: 70-130 s per process on 2 "
    "cpu cores, more than all other metrics together"
}
# the Benchmarker's weights of its total (the scIB paper's)
BIO_WEIGHT, BATCH_WEIGHT = 0.6, 0.4
# the Benchmarker's neighbourhood sizes: lisi (90), graph connectivity (15); self included
LISI_NEIGHBORS, GRAPH_NEIGHBORS = 90, 15


def _neighbours(rep: np.ndarray, n_neighbors: int) -> Any:
    """Exact Euclidean neighbours (the cell itself first) as scib-metrics' NeighborsResults; the
    Benchmarker's default is approximate (pynndescent), whose compilation costs more than all
    of this."""
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    k = min(n_neighbors, len(rep))
    dist, idx = NearestNeighbors(n_neighbors=k).fit(rep).kneighbors(rep)
    return NeighborsResults(indices=idx, distances=dist.astype(np.float32))


def _scores(
    rep: np.ndarray, labels: np.ndarray, batches: np.ndarray, pre: np.ndarray | None
) -> dict[str, float]:
    """Each metric of BIO_CONSERVATION and BATCH_CORRECTION on one representation, raw values
    (pcr_comparison only with a pre-integrated ``pre``)."""
    import scib_metrics as sm

    rep = np.ascontiguousarray(rep, dtype=np.float32)
    knn = _neighbours(rep, LISI_NEIGHBORS)
    out = {
        "isolated_labels": sm.isolated_labels(rep, labels, batches),
        **{
            f"nmi_ari_cluster_labels_kmeans_{k}": v
            for k, v in sm.nmi_ari_cluster_labels_kmeans(rep, labels).items()
        },
        "silhouette_label": sm.silhouette_label(rep, labels),
        "clisi_knn": sm.clisi_knn(knn, labels),
        "bras": sm.bras(rep, labels, batches),
        "ilisi_knn": sm.ilisi_knn(knn, batches),
        "graph_connectivity": sm.graph_connectivity(knn.subset_neighbors(GRAPH_NEIGHBORS), labels),
    }
    if pre is not None:
        out["pcr_comparison"] = sm.pcr_comparison(pre, rep, batches, categorical=True)
    return {k: float(v) for k, v in out.items()}


def _aggregate(scores: dict[str, float]) -> dict[str, float | None]:
    """The Benchmarker's aggregates of raw metric values: the mean of each type's metrics (NaN
    skipped, as pandas' groupby mean) and total = 0.6 bio + 0.4 batch. Its get_results can
    min-max scale each metric across the embeddings compared first, which makes a total depend
    on which embeddings were run together; the raw values (min_max_scale=False) keep figures
    comparable across runs."""
    out: dict[str, float | None] = {k: (None if np.isnan(v) else v) for k, v in scores.items()}
    for name, metrics in (
        ("bio_conservation", BIO_CONSERVATION),
        ("batch_correction", BATCH_CORRECTION),
    ):
        values = [out[m] for m in metrics if out.get(m) is not None]
        out[name] = float(np.mean(values)) if values else None
    bio, batch = out["bio_conservation"], out["batch_correction"]
    both = bio is not None and batch is not None
    out["total"] = BIO_WEIGHT * bio + BATCH_WEIGHT * batch if both else None
    return out


def batch_metrics(
    embeddings: dict[str, np.ndarray],
    labels: np.ndarray,
    batches: np.ndarray,
    *,
    pre_integrated: np.ndarray | None,
    seed: int,
) -> dict[str, dict[str, float]]:
    """scib-metrics' scores of each ``name -> representation`` (cells, dims): the metrics of
    BIO_CONSERVATION and BATCH_CORRECTION (raw values, each in [0, 1], higher is better), their
    means ``bio_conservation`` and ``batch_correction`` and ``total`` (0.6 bio + 0.4 batch), as
    the Benchmarker reports them without min-max scaling. None where a metric is undefined (e.g.
    no isolated label).

    ``labels`` / ``batches``: per cell; cells whose label is missing (NaN / None) are left out
    of every metric. ``pre_integrated``: the unintegrated PCA that pcr_comparison compares each
    representation with (0 for itself); None leaves pcr_comparison out. ``seed``: nothing here
    draws at random (exact neighbours; scib-metrics' k-means has its own fixed seed 0), so the
    scores are deterministic; it is kept for a seeded future subsample.
    """
    del seed
    labels, batches = np.asarray(labels, dtype=object), np.asarray(batches, dtype=object)
    known = pd.notna(labels)
    if known.sum() < 2 or len(set(labels[known].astype(str))) < 2:
        raise DataError("batch metrics need at least 2 labelled cells of 2 classes")
    y, b = labels[known].astype(str), batches[known].astype(str)
    if len(set(b)) < 2:
        raise DataError(
            f"batch metrics need at least 2 batches among the labelled cells; got {set(b)}"
        )
    pre = None if pre_integrated is None else np.asarray(pre_integrated, np.float32)[known]
    out = {}
    with warnings.catch_warnings():
        # pcr_comparison warns where it clips a negative score to 0 (its documented behaviour)
        warnings.filterwarnings("ignore", message="PCR comparison score is negative")
        for name, rep in embeddings.items():
            if len(rep) != len(labels):
                raise DataError(f"{name} has {len(rep)} rows but there are {len(labels)} cells")
            start = time.perf_counter()
            out[name] = _aggregate(_scores(np.asarray(rep)[known], y, b, pre))
            log.info("scib metrics of %s: %.1f s", name, time.perf_counter() - start)
    return out


def _transfer_key(
    embeddings: dict[str, np.ndarray],
    key: str,
    codes: np.ndarray,
    classes: list[str],
    in_reference: np.ndarray,
    *,
    n_neighbors: int,
    seed: int,
) -> dict[str, Any]:
    """One label key: each method of METHODS fitted on the reference's labelled cells and scored
    on the other labelled cells, for each representation."""
    train = in_reference & (codes >= 0)
    test = ~in_reference & (codes >= 0)
    seen = set(np.unique(codes[train]).tolist())
    entry: dict[str, Any] = {
        "n_train": int(train.sum()),
        "n_evaluated": int(test.sum()),
        "classes_not_in_reference": sorted(
            {classes[c] for c in np.unique(codes[test]).tolist()} - {classes[c] for c in seen}
        ),
    }
    if not train.any():
        raise DataError(
            f"label column '{key}' has no labelled cell in the reference (eval.transfer_reference)"
        )
    y = codes[test]
    for name, rep in embeddings.items():
        scores: dict[str, Any] = {}
        for method in METHODS:
            if not test.any():
                scores[method] = {"f1_macro": None, "accuracy": None}
                continue
            proba = fit_predict(
                rep[train], codes[train], rep[test], len(classes), method=method,
                n_neighbors=n_neighbors, seed=seed,
            )  # fmt: skip
            pred = proba.argmax(axis=1)
            scores[method] = {"f1_macro": macro_f1(y, pred), "accuracy": float(np.mean(pred == y))}
        entry[name] = scores
    return entry


def cross_batch_transfer(
    embeddings: dict[str, np.ndarray],
    obs: pd.DataFrame,
    *,
    label_keys: Sequence[str],
    transfer_key: str,
    reference: Sequence[str],
    n_neighbors: int,
    seed: int,
) -> dict[str, Any]:
    """Label transfer across batches: for each label key and each ``name -> representation``
    (cells, dims; rows in the order of ``obs``), kNN (k = ``n_neighbors``, capped at the
    training cells) and logistic regression fitted on the labelled cells whose
    ``obs[transfer_key]`` is one of ``reference`` and scored on every other labelled cell (the
    predicted cells): macro F1 (over the classes among the predicted cells; a class the
    reference lacks scores 0) and accuracy.

    Returns ``transfer_key``, ``reference``, ``query`` (the other values), ``n_reference`` /
    ``n_predicted`` (cells each side, labelled or not) and ``labels.<key>``: ``n_train``,
    ``n_evaluated`` (the labelled predicted cells), ``classes_not_in_reference`` and
    ``<name>.<method>.{f1_macro, accuracy}``. Fails (DataError) naming the key and the available
    values when ``transfer_key`` or a reference value is not in ``obs``.
    """
    from threadpoolctl import threadpool_limits

    in_reference = transfer_split(obs, transfer_key, reference)
    for name, rep in embeddings.items():
        if len(rep) != len(obs):
            raise DataError(f"{name} has {len(rep)} rows but the data has {len(obs)} cells")
    values = strings(obs[transfer_key])
    out: dict[str, Any] = {
        "transfer_key": transfer_key,
        "reference": [str(r) for r in reference],
        "query": sorted({v for v in values[~in_reference] if v is not None}),
        "n_reference": int(in_reference.sum()),
        "n_predicted": int((~in_reference).sum()),
        "labels": {},
    }
    with threadpool_limits(limits=1):  # small fits: more threads only wait (representation.py)
        for key in label_keys:
            codes, classes = labelled(obs, key)
            out["labels"][key] = _transfer_key(
                embeddings, key, codes, classes, in_reference, n_neighbors=n_neighbors, seed=seed
            )
    return out
