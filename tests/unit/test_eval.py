import numpy as np
import pandas as pd
import pytest

from src.app.config import EvalConfig
from src.app.core.eval import classification_metrics, evaluate_latent, out_of_fold_proba
from src.app.errors import DataError


def blobs(n_per=40, n_classes=3, sep=6.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, 5)) * sep
    y = np.repeat(np.arange(n_classes), n_per)
    return centres[y] + rng.normal(size=(len(y), 5)), y


def test_hand_computed_metrics():
    y = np.array([0, 0, 1, 1, 2, 2])
    proba = np.array(
        [[0.9, 0.1, 0], [0.2, 0.8, 0], [0.1, 0.9, 0], [0.3, 0.6, 0.1], [0, 0.1, 0.9], [0, 0.2, 0.8]]
    )
    m = classification_metrics(y, proba, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(5 / 6)
    # per class F1: a 2/3 (p=1, r=.5), b 0.8 (p=2/3, r=1), c 1
    assert m["per_class_f1"] == pytest.approx({"a": 2 / 3, "b": 0.8, "c": 1.0})
    assert m["f1_macro"] == pytest.approx((2 / 3 + 0.8 + 1) / 3)
    assert m["confusion_matrix"]["counts"] == [[1, 1, 0], [0, 2, 0], [0, 0, 2]]
    assert 0.5 < m["auroc"] <= 1.0


def test_binary_auroc_and_absent_predictions():
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.7, 0.3], [0.2, 0.8]])
    m = classification_metrics(y, proba, ["neg", "pos"])
    assert m["auroc"] == pytest.approx(0.75)
    # a class never predicted gets F1 0 without a warning
    m = classification_metrics(y, np.tile([1.0, 0.0], (4, 1)), ["neg", "pos"])
    assert m["per_class_f1"]["pos"] == 0.0


def test_separable_latent_scores_high():
    latent, y = blobs()
    obs = pd.DataFrame({"cell_type": pd.Categorical(np.array(["x", "y", "z"])[y])})
    m = evaluate_latent(latent, obs, EvalConfig(label_keys=("cell_type",)), seed=0)
    assert m["f1_macro"] > 0.95
    assert m["labels"]["cell_type"]["logreg"]["auroc"] > 0.95
    assert m["labels"]["cell_type"]["support"] == {"x": 40, "y": 40, "z": 40}


def test_unlabelled_cells_are_left_out_and_rare_classes_survive():
    latent, y = blobs(n_per=30)
    names = np.array(["a", "b", "c"], dtype=object)[y]
    names[:5] = None
    names[30:58] = "b"
    names[58:60] = "rare"  # fewer members than folds
    obs = pd.DataFrame({"k": names})
    m = evaluate_latent(latent, obs, EvalConfig(label_keys=("k",)), seed=0)
    entry = m["labels"]["k"]
    assert entry["n_unlabelled"] == 5
    assert entry["support"]["rare"] == 2
    assert "rare" in entry["knn"]["per_class_f1"]


def test_oof_proba_rows_sum_to_one():
    latent, y = blobs()
    proba = out_of_fold_proba(latent, y, 3, method="logreg", cfg=EvalConfig(), seed=0)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)


def test_errors_name_the_label_column():
    latent, y = blobs()
    obs = pd.DataFrame({"cell_type": y.astype(str)})
    with pytest.raises(DataError, match="'missing'"):
        evaluate_latent(latent, obs, EvalConfig(label_keys=("missing",)), seed=0)
    with pytest.raises(DataError, match="single class"):
        evaluate_latent(
            latent, pd.DataFrame({"k": ["a"] * len(y)}), EvalConfig(label_keys=("k",)), seed=0
        )
    with pytest.raises(DataError, match="labelled cells"):
        evaluate_latent(
            latent, pd.DataFrame({"k": [None] * len(y)}), EvalConfig(label_keys=("k",)), seed=0
        )
    with pytest.raises(DataError, match="rows"):
        evaluate_latent(latent[:-1], obs, EvalConfig(label_keys=("cell_type",)), seed=0)
