"""Classifiers fitted on part of the labels: rare classes, single-class training sets, label
propagation, and the stratified label draw."""

import numpy as np
import pandas as pd
import pytest

from src.app.core.data.graph import knn_graph, nearest_neighbours
from src.app.core.data.labels import draw_visible, label_codes
from src.app.core.evaluate.classify import (
    fit_predict,
    label_propagation,
    out_of_fold_proba,
    transfer_proba,
)
from src.app.core.model import pseudo_labels as pseudo_module
from src.app.core.model.pseudo_labels import brute_force_neighbours, pseudo_labels


def blobs(sizes, *, dim=5, sep=8.0, seed=0):
    """Gaussian blobs, one per class, of the given sizes; returns (points, class codes)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(sizes)), sizes)
    centres = rng.normal(size=(len(sizes), dim)) * sep
    return centres[y] + rng.normal(size=(len(y), dim)), y


def test_label_codes_sort_names_and_mark_unlabelled():
    codes, classes = label_codes(pd.Series(["b", None, "a", "b", np.nan]))
    assert classes == ["a", "b"]
    assert codes.tolist() == [1, -1, 0, 1, -1]


def test_draw_keeps_every_class_and_matches_the_classifier_heads_draw():
    from src.app.config import config_from_dict
    from src.app.core.data.codes import head_codes

    values = np.array(["T"] * 200 + ["B"] * 50 + ["Platelet"] * 3 + [None] * 10, dtype=object)
    codes, classes = label_codes(pd.Series(values))
    visible = draw_visible(codes, fraction=0.01, seed=3)
    counts = dict(zip(classes, np.bincount(codes[visible], minlength=3).tolist(), strict=True))
    assert counts == {"B": 1, "Platelet": 1, "T": 2}  # round(0.01 n), at least one
    assert not visible[codes < 0].any()
    np.testing.assert_array_equal(visible, draw_visible(codes, fraction=0.01, seed=3))
    obs = pd.DataFrame({"cell_type": values})
    cfg = config_from_dict(
        {"seed": 3, "annotation": {"label_key": "cell_type", "label_fraction": 0.01}}
    )
    head = head_codes(obs, cfg)[1] >= 0
    np.testing.assert_array_equal(visible, head)


def test_single_class_training_predicts_it_and_knn_caps_k():
    x = np.arange(12, dtype=float).reshape(6, 2)
    proba = fit_predict(x[:3], np.array([1, 1, 1]), x, 3, method="logreg", n_neighbors=15, seed=0)
    np.testing.assert_array_equal(proba, np.tile([0.0, 1.0, 0.0], (6, 1)))
    # 4 training cells, k=15: capped at 4, no error
    y = np.array([0, 0, 2, 2])
    proba = fit_predict(x[:4], y, x, 3, method="knn", n_neighbors=15, seed=0)
    assert proba.shape == (6, 3)
    assert (proba[:, 1] == 0).all()
    with pytest.raises(ValueError, match="unknown method"):
        fit_predict(x[:4], y, x, 3, method="svm", n_neighbors=15, seed=0)


def test_a_fold_with_a_single_training_class():
    # four a cells, one b: 4 folds; the fold holding the b cell trains on a alone
    x, _ = blobs([5], dim=2)
    y = np.array([0, 0, 0, 0, 1])
    proba, info = out_of_fold_proba(x, y, 2, method="logreg", n_folds=5, n_neighbors=15, seed=0)
    assert info["n_splits"] == 4
    assert info["single_class_folds"] == 1
    assert info["n_neighbors"] == 3  # capped at the smallest training part
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert proba[4].tolist() == [1.0, 0.0]


def test_folds_when_every_class_is_a_single_cell():
    x, y = blobs([1, 1, 1], dim=2)
    proba, info = out_of_fold_proba(x, y, 3, method="knn", n_folds=5, n_neighbors=15, seed=0)
    assert info["n_splits"] == 3
    assert proba.shape == (3, 3)


def test_label_propagation_spreads_within_components_and_falls_back_outside():
    x, y = blobs([10, 10, 10], dim=3, sep=50.0)
    graph = knn_graph(x, n_neighbors=3)  # blobs far apart: three separate components
    codes = np.where(y < 2, y, -1)
    train = np.zeros(30, dtype=bool)
    train[[0, 10]] = True  # one labelled cell in each of the first two blobs
    proba, unreached = label_propagation(graph, codes, train, 2)
    assert unreached == 10
    assert (proba[:10].argmax(axis=1) == 0).all()
    assert (proba[10:20].argmax(axis=1) == 1).all()
    np.testing.assert_allclose(proba[20:], 0.5)  # the training class frequencies
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


@pytest.mark.parametrize("method", ["knn", "logreg", "label_propagation"])
def test_one_percent_labels_with_a_rare_class(method):
    # 14 rare cells among ~1,100: a 1 % draw labels one of them, fewer than k
    x, y = blobs([700, 400, 14])
    visible = draw_visible(y, fraction=0.01, seed=0)
    assert np.bincount(y[visible]).tolist() == [7, 4, 1]
    proba, _ = transfer_proba(x, y, visible, 3, method=method, n_neighbors=15, seed=0)
    assert proba.shape == (len(y), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    accuracy = (proba.argmax(axis=1) == y)[~visible].mean()
    assert accuracy > 0.6


def test_brute_force_neighbours_match_the_tree_search(monkeypatch):
    x, _ = blobs([60, 50, 40], dim=4, sep=2.0, seed=5)
    monkeypatch.setattr(pseudo_module, "BRUTE_FORCE_CHUNK", 32)  # several chunks
    found = brute_force_neighbours(x, n_neighbors=7)
    expected, _ = nearest_neighbours(x, n_neighbors=7)
    np.testing.assert_array_equal(np.sort(found, axis=1), np.sort(expected, axis=1))
    assert (found != np.arange(len(x))[:, None]).all()  # never its own neighbour
    # duplicated points: self still excluded, k capped at cells - 1
    tied = brute_force_neighbours(np.zeros((3, 2)), n_neighbors=5)
    assert np.sort(tied, axis=1).tolist() == [[1, 2], [0, 2], [0, 1]]
    monkeypatch.setattr(pseudo_module, "BRUTE_FORCE_MAX_CELLS", 100)
    assert brute_force_neighbours(x, n_neighbors=7) is None  # a tree search is faster there


def test_pseudo_labels_follow_the_graph_and_weigh_by_certainty():
    x, _y = blobs([10, 10, 10], dim=3, sep=50.0)
    codes = np.full(30, -1)
    codes[[0, 10]] = [0, 1]  # one label in each of the first two blobs; the third has none
    pseudo, weights = pseudo_labels(x, codes, 2, n_neighbors=3)
    assert (pseudo[1:10] == 0).all()
    assert (pseudo[11:20] == 1).all()
    assert weights[[0, 10]].tolist() == [0.0, 0.0]  # labelled cells keep their own label
    assert (np.delete(weights[:20], [0, 10]) > 0.99).all()  # one class reaches a blob: certain
    assert (weights[20:] == 0).all()  # unreached: no pseudo-label weight


def test_pseudo_label_certainty_drops_between_classes():
    # two touching blobs, each with one label: cells in between are less certain than the core
    x, _y = blobs([40, 40], dim=2, sep=1.5, seed=3)
    codes = np.full(80, -1)
    codes[[0, 40]] = [0, 1]
    _, weights = pseudo_labels(x, codes, 2, n_neighbors=5)
    weights = weights[codes < 0]
    assert 0 < weights.min() < weights.max() <= 1
    assert np.isfinite(weights).all()
