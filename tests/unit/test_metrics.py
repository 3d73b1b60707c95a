"""Classification and latent-quality metrics against hand-computed cases."""

import numpy as np
import pytest

from src.app.core.evaluate.metrics import auroc, classification_metrics, latent_quality, macro_f1


def one_hot(pred, n_classes):
    return np.eye(n_classes)[pred]


def test_hand_computed_scores_with_a_class_never_predicted():
    y = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 1, 0])  # class c (2) is never predicted
    m = classification_metrics(y, one_hot(pred, 3), ["a", "b", "c"])
    # a: TP 2, FP 1, FN 1 -> p 2/3, r 2/3, F1 2/3; b: TP 2, FP 1 -> p 2/3, r 1, F1 0.8; c: all 0
    assert m["per_class"]["a"] == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3}
    )
    assert m["per_class"]["b"] == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    )
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["n_cells"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m["f1_macro"] == pytest.approx((2 / 3 + 0.8 + 0) / 3)
    assert m["f1_weighted"] == pytest.approx((3 * 2 / 3 + 2 * 0.8 + 1 * 0) / 6)
    assert m["confusion_matrix"] == {
        "classes": ["a", "b", "c"],
        "counts": [[2, 1, 0], [0, 2, 0], [1, 0, 0]],
    }


def test_class_absent_from_the_truth_is_left_out_of_the_averages():
    # class c has no true cells but is predicted once: it costs accuracy, not the class averages
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, 2, 1, 1])
    m = classification_metrics(y, one_hot(pred, 3), ["a", "b", "c"])
    assert m["per_class"]["c"]["support"] == 0
    # a: p 1, r 1/2, F1 2/3; b: F1 1
    assert m["f1_macro"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1) / 2)
    assert m["accuracy"] == pytest.approx(3 / 4)


def test_binary_auroc_is_the_positive_class_ranking():
    y = np.array([0, 0, 1, 1])
    p_pos = np.array([0.1, 0.4, 0.3, 0.8])
    # positive/negative pairs ranked right: (.3>.1), (.8>.1), (.8>.4); wrong: (.3<.4) -> 3/4
    proba = np.column_stack([1 - p_pos, p_pos])
    assert auroc(y, proba) == pytest.approx(0.75)
    assert classification_metrics(y, proba, ["neg", "pos"])["auroc"] == pytest.approx(0.75)


def test_multiclass_auroc_is_the_macro_mean_of_one_vs_rest():
    y = np.array([0, 0, 1, 1, 2, 2])
    proba = np.array(
        [
            [0.8, 0.1, 0.1],
            [0.6, 0.3, 0.1],
            [0.1, 0.8, 0.1],
            [0.7, 0.2, 0.1],  # a b cell ranked above an a cell for a
            [0.1, 0.1, 0.8],
            [0.1, 0.1, 0.8],
        ]
    )
    # one-vs-rest over 2 x 4 pairs each: a 7/8 (the b cell's .7 beats the a cell's .6),
    # b 7/8 (that b cell's .2 loses to the a cell's .3), c 1
    assert auroc(y, proba) == pytest.approx((7 / 8 + 7 / 8 + 1) / 3)
    # a class absent from the truth: its column is dropped, the rest renormalised (binary here)
    two = np.array([[0.5, 0.2, 0.3], [0.1, 0.6, 0.3], [0.4, 0.3, 0.3]])
    assert auroc(np.array([0, 1, 0]), two) == pytest.approx(1.0)


def test_a_single_true_class_has_no_auroc():
    y = np.zeros(4, dtype=int)
    m = classification_metrics(y, one_hot(np.array([0, 0, 1, 0]), 2), ["a", "b"])
    assert m["auroc"] is None
    assert m["balanced_accuracy"] == pytest.approx(3 / 4)
    assert m["f1_macro"] == pytest.approx(m["per_class"]["a"]["f1"])


def test_silhouette_and_cluster_agreement_by_hand():
    # a at 0 and 1, b at 10 and 11 (one dimension): each point's mean distance within its class
    # is 1 and to the other class 10.5 (outer points) or 9.5 (inner points)
    rep = np.array([[0.0], [1.0], [10.0], [11.0], [5.0]])
    codes = np.array([0, 0, 1, 1, -1])  # the unlabelled middle cell is left out of the scores
    q = latent_quality(rep[:4], codes[:4], seed=0)
    outer, inner = 1 - 1 / 10.5, 1 - 1 / 9.5
    assert q["silhouette"] == pytest.approx((outer + inner) / 2)
    assert q["ari"] == q["nmi"] == pytest.approx(1.0)  # k-means (k=2) finds the two classes
    assert latent_quality(rep, codes, seed=0)["n_clusters"] == 2


def test_latent_quality_separates_blobs_and_skips_degenerate_labels():
    rng = np.random.default_rng(0)
    codes = np.repeat([0, 1, 2], 20)
    rep = np.eye(3)[codes] * 20 + rng.normal(size=(60, 3))
    codes[:5] = -1  # unlabelled cells are left out
    q = latent_quality(rep, codes, seed=0)
    assert q["n_clusters"] == 3
    assert q["silhouette"] > 0.8
    assert q["ari"] == pytest.approx(1.0)
    assert q["nmi"] == pytest.approx(1.0)
    one = latent_quality(rep, np.zeros(60, dtype=int), seed=0)
    assert one["silhouette"] is None


def test_macro_f1_agrees_with_scikit_learn():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, size=200)
    pred = np.where(rng.random(200) < 0.6, y, rng.integers(0, 6, size=200))
    expected = f1_score(y, pred, labels=np.unique(y), average="macro", zero_division=0)
    assert macro_f1(y, pred) == pytest.approx(expected)
    assert macro_f1(np.array([0, 0]), np.array([1, 1])) == 0.0
