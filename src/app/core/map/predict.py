"""Reference labels for query cells: classifiers fitted on the reference, a confidence, and the
``unknown`` call. NumPy and scikit-learn only (no torch, no AnnData).

The label is the mean of two class-weighted logistic regressions fitted on every labelled
reference cell: one on the model's latent, one on the reference-standardised expression of the
model's genes. On PBMC 3k -> Kang (bench/bench_mapping.py) local rules (kNN on the latent, the
classifier head, an RBF SVM) lose 0.05-0.25 macro F1 to a linear model: a query from another
experiment is shifted as a whole, and a linear boundary extrapolates where neighbourhoods do not;
the expression model keeps marker genes the 10-dimensional latent compresses (CD8A), the latent
model the structure the VAE learned; their mean beats each.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from src.app.core.data.graph import nearest_neighbours
from src.app.core.data.preprocess import SCALE_MAX

UNKNOWN = "unknown"
EXPRESSION_C = 0.1  # inverse L2 strength of the expression model: strong, as transfer needs
N_NEIGHBORS = 5  # reference neighbours of the distance that flags unknown cells
N_SMOOTH = 15  # query neighbours whose majority decides an unknown call
# the share of them that must be far: 0.5 / 0.6 / 0.7 call 4.2 / 2.8 / 2.3 % of Kang's known
# cells unknown and 93 / 92 / 90 % of B cells left out of a PBMC 3k half (3 seeds each)
MAJORITY = 0.6


def standardise(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """z-scores with the reference's mean and scale, clipped as ``sc.pp.scale`` (float32)."""
    z = (np.asarray(x, dtype=np.float32) - mean) / scale
    return np.clip(z, -SCALE_MAX, SCALE_MAX, out=z)


def moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene mean and scale (genes that do not vary keep scale 1)."""
    x = np.asarray(x, dtype=np.float64)
    mean, sd = x.mean(0), x.std(0)
    return mean.astype(np.float32), np.where(sd > 0, sd, 1.0).astype(np.float32)


def _fit_logreg(x: np.ndarray, y: np.ndarray, *, c: float, seed: int, scale: bool):
    """A logistic regression fitted on ``x`` (standardised first with ``scale``), each class
    weighted by the square root of its inverse frequency: full balancing makes a shifted query
    fall into the rarest types (Kang's stimulated monocytes into PBMC 3k's 14 megakaryocytes;
    macro F1 0.847 against 0.858 with the square root), none loses the rare types of a query
    like the reference (0.934 against 0.949 on PBMC 3k halves)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    names, counts = np.unique(y, return_counts=True)
    weights = {
        n: float(np.sqrt(len(y) / (len(names) * k))) for n, k in zip(names, counts, strict=True)
    }
    model = LogisticRegression(C=c, class_weight=weights, max_iter=2000, random_state=seed)
    model = make_pipeline(StandardScaler(), model) if scale else model
    with warnings.catch_warnings():  # a rare non-converged fit still predicts well
        warnings.simplefilter("ignore")
        return model.fit(x, y)


@dataclass
class ReferenceClassifier:
    """The two reference models of one label key; ``classes`` in the order of the columns of
    :meth:`proba`."""

    classes: np.ndarray
    latent_model: object
    expression_model: object
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(
        cls, latent: np.ndarray, expression: np.ndarray, labels: np.ndarray, *, seed: int
    ) -> ReferenceClassifier:
        """Fit on the reference cells whose label is not NaN/None: ``latent`` (cells, d),
        ``expression`` (cells, genes) log-normalised, ``labels`` (cells,) names."""
        import pandas as pd

        known = pd.notna(labels)
        y = np.asarray(labels, dtype=object)[known].astype(str)
        mean, scale = moments(expression[known])
        latent_model = _fit_logreg(latent[known], y, c=1.0, seed=seed, scale=True)
        z = standardise(expression[known], mean, scale)
        expression_model = _fit_logreg(z, y, c=EXPRESSION_C, seed=seed, scale=False)
        return cls(np.unique(y), latent_model, expression_model, mean, scale)

    def proba(self, latent: np.ndarray, expression: np.ndarray) -> np.ndarray:
        """Class probabilities (cells, classes): the mean of the two models'."""
        z = standardise(expression, self.mean, self.scale)
        return 0.5 * (
            self.latent_model.predict_proba(latent) + self.expression_model.predict_proba(z)
        )


def latent_distances(
    reference_latent: np.ndarray, query_latent: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each reference cell's mean distance to its ``N_NEIGHBORS`` nearest other reference cells,
    and each query cell's to its nearest reference cells. O(cells log reference) with the
    reference's one tree index."""
    from sklearn.neighbors import NearestNeighbors

    k = max(1, min(N_NEIGHBORS, len(reference_latent) - 1))
    index = NearestNeighbors(n_neighbors=k).fit(reference_latent)
    ref = index.kneighbors()[0].mean(1)  # without X: each cell's own zero is left out
    return ref, index.kneighbors(query_latent)[0].mean(1)


def unknown_cells(
    reference_distance: np.ndarray,
    query_distance: np.ndarray,
    reference_labels: np.ndarray,
    predicted: np.ndarray,
    *,
    query_latent: np.ndarray,
    query_batches: np.ndarray,
    quantile: float,
) -> tuple[np.ndarray, dict]:
    """Which query cells belong to a type the reference lacks (cells,), and the bounds used.

    1. A query cell of batch ``b`` predicted as type ``c`` is far when its distance to the
       reference (see :func:`latent_distances`) exceeds the ``1 - quantile`` quantile of the
       distances of the reference's ``c`` cells, times the shift of the query's ``(b, c)``
       cells: their median distance over the reference ``c`` cells' median, where above 1.
       The per-type bound follows each type's own density (a rare type's cells lie far apart);
       the shift keeps a query from another lab or under a stimulus, whose every cell lies
       farther, from losing its cells to ``unknown``.
    2. A cell is unknown when over ``MAJORITY`` of its ``N_SMOOTH`` nearest query cells
       (itself included) are far: a missing type is a population, while the far tail of a known
       type is scattered.

    On PBMC 3k halves (bench/bench_mapping.py) this calls 92 % of B cells left out of the
    reference unknown and 0.2 % of the others; on Kang, 3 % of the known cells.
    """
    import pandas as pd

    ref_labels = np.asarray(reference_labels, dtype=object)
    known = pd.notna(ref_labels)
    ref_names = np.where(known, ref_labels.astype(str), "")
    predicted = np.asarray(predicted, dtype=object)
    batches = np.asarray(query_batches, dtype=object)
    bounds: dict[str, float] = {}
    medians = np.ones(len(query_distance))
    limits = np.full(len(query_distance), np.inf)
    for c in np.unique(ref_names[known]):
        mine = reference_distance[ref_names == c]
        bounds[str(c)] = float(np.quantile(mine, 1.0 - quantile))
        cells = predicted == c
        medians[cells] = max(float(np.median(mine)), 1e-12)
        limits[cells] = bounds[str(c)]
    relative = query_distance / medians  # 1: as far as the reference's own cells of the type
    far = np.zeros(len(query_distance), dtype=bool)
    shifts: dict[str, float] = {}
    for b in np.unique(batches):
        cells = batches == b
        shifts[str(b)] = max(1.0, float(np.median(relative[cells])))
        far[cells] = query_distance[cells] > limits[cells] * shifts[str(b)]
    # the cell itself and its N_SMOOTH - 1 nearest other query cells
    idx, _ = nearest_neighbours(query_latent, n_neighbors=N_SMOOTH - 1)
    unknown = (far + far[idx].sum(1)) / (idx.shape[1] + 1) > MAJORITY
    return unknown, {"reference_bounds": bounds, "shifts": shifts, "n_far": int(far.sum())}


def call_labels(proba: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label names and the confidence (largest probability) of each cell."""
    labels = np.asarray(classes, dtype=object)[proba.argmax(1)]
    return labels, proba.max(1).astype(np.float32)


def query_metrics(truth: np.ndarray, predicted: np.ndarray, reference_classes) -> dict:
    """Macro F1 and accuracy on the query cells of types the reference has (``unknown``
    counts as wrong there), the share of them called unknown, and the share of cells of other
    types called unknown (None without such cells)."""
    import pandas as pd
    from sklearn.metrics import accuracy_score, f1_score

    truth = np.asarray(truth, dtype=object)
    has = pd.notna(truth)
    truth_s = truth.astype(str)
    known = has & np.isin(truth_s, list(map(str, reference_classes)))
    novel = has & ~known
    called = np.asarray(predicted, dtype=object).astype(str)
    types = sorted(set(truth_s[known]))
    return {
        "n_cells": int(has.sum()),
        "n_known_type": int(known.sum()),
        "n_novel_type": int(novel.sum()),
        "macro_f1": float(f1_score(truth_s[known], called[known], labels=types, average="macro"))
        if known.any()
        else None,
        "accuracy": float(accuracy_score(truth_s[known], called[known])) if known.any() else None,
        "known_called_unknown": float((called[known] == UNKNOWN).mean()) if known.any() else None,
        "novel_called_unknown": float((called[novel] == UNKNOWN).mean()) if novel.any() else None,
    }
