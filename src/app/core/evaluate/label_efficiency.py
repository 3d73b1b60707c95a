"""The label-efficiency curve: how well each method annotates the other cells when only a seeded,
stratified fraction of the cells is labelled. Never imports torch."""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from src.app.config import EvalConfig
from src.app.core.data.labels import draw_visible
from src.app.core.evaluate.classify import TRANSFER_METHODS, transfer_proba
from src.app.core.evaluate.metrics import macro_f1


def fraction_key(fraction: float) -> str:
    """The key of a label fraction in metrics.json: ``0.01`` -> ``"0.01"``."""
    return f"{fraction:g}"


def curve_point(values: list[float]) -> dict[str, Any]:
    """Mean, sample SD (None for one value) and the values of one label fraction's scores."""
    return {
        "f1_macro": statistics.fmean(values) if values else None,
        "f1_macro_sd": statistics.stdev(values) if len(values) > 1 else None,
        "n_repeats": len(values),
        "values": values,
    }


def label_efficiency(
    rep: np.ndarray,
    codes: np.ndarray,
    classes: list[str],
    cfg: EvalConfig,
    *,
    seed: int,
    graph: Any,
    fits: dict | None = None,
) -> dict[str, Any]:
    """Macro F1 on the labelled cells left out of a stratified draw of each label fraction, over
    ``cfg.n_repeats`` draws (seeds ``seed``, ``seed + 1``, ...; the same draws for every method
    and representation), for each method in TRANSFER_METHODS. ``graph``: :func:`knn_graph` of
    ``rep``; ``fits``: the cache of :func:`transfer_proba`. Cost: fractions x repeats x (kNN, logistic regression, propagation) fits."""
    known = codes >= 0
    out: dict[str, Any] = {"fractions": {}, **{m: {} for m in TRANSFER_METHODS}}
    for fraction in cfg.label_fractions:
        scores: dict[str, list[float]] = {m: [] for m in TRANSFER_METHODS}
        unreached = 0
        for repeat in range(cfg.n_repeats):
            train = draw_visible(codes, fraction=fraction, seed=seed + repeat)
            test = known & ~train
            if not test.any():
                break
            for method in TRANSFER_METHODS:
                proba, n_unreached = transfer_proba(
                    rep,
                    codes,
                    train,
                    len(classes),
                    method=method,
                    n_neighbors=cfg.n_neighbors,
                    seed=seed,
                    graph=graph,
                    fits=fits,
                )
                scores[method].append(macro_f1(codes[test], proba[test].argmax(axis=1)))
                unreached = max(unreached, n_unreached)
        per_class = np.bincount(codes[train], minlength=len(classes))
        k = min(cfg.n_neighbors, int(train.sum()))
        out["fractions"][fraction_key(fraction)] = {
            "n_labelled": int(train.sum()),
            "n_evaluated": int(test.sum()),
            "n_neighbors": k,
            "classes_below_k": {
                c: int(n) for c, n in zip(classes, per_class, strict=True) if 0 < n < k
            },
        }
        for method in TRANSFER_METHODS:
            out[method][fraction_key(fraction)] = curve_point(scores[method])
        out["label_propagation"][fraction_key(fraction)]["n_unreached"] = unreached
    return out
