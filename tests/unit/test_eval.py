"""metrics.json of a run: every section, the same protocol for the latent and the PCA baseline,
the classifier head's scores, rare classes, and the errors that name the label column."""

import json

import numpy as np
import pandas as pd
import pytest

from src.app.config import Config, EvalConfig, config_from_dict
from src.app.core.data.keys import VISIBLE_KEY
from src.app.core.eval import (
    evaluate_latent,
    evaluate_representation,
    evaluate_run,
    summary_table,
)
from src.app.errors import DataError
from tests.unit.test_classify import blobs

NAMES = np.array(["B", "Mono", "Platelet", "T"], dtype=object)


def run_config(**eval_keys) -> Config:
    return config_from_dict(
        {
            "eval": {
                "label_keys": ["coarse", "fine"],
                "label_fractions": [0.05, 0.5],
                "n_repeats": 2,
                **eval_keys,
            },
            "baseline": {"n_comps": 5},
            "annotation": {"label_key": "coarse", "label_fraction": 0.05},
        }
    )


@pytest.fixture(scope="module")
def cells():
    """Latent, expression and labels of ~300 cells with a rare class (6 'Platelet' cells)."""
    latent, y = blobs([120, 80, 6, 100], dim=4)
    rng = np.random.default_rng(1)
    expression = np.abs(latent @ rng.normal(size=(4, 30)) + rng.normal(size=(len(y), 30)))
    coarse = NAMES[y].copy()
    fine = np.where(coarse == "T", np.where(np.arange(len(y)) % 2, "T naive", "T memory"), coarse)
    coarse[::25] = None  # unlabelled cells
    obs = pd.DataFrame({"coarse": pd.Categorical(coarse), "fine": fine.astype(object)})
    return latent, expression.astype(np.float32), obs


def test_every_section_for_the_latent_and_the_baseline(cells):
    latent, expression, obs = cells
    cfg = run_config()
    m = evaluate_run(latent, obs, cfg, expression=expression).metrics
    json.dumps(m)  # plain JSON
    assert m["f1_macro"] == m["labels"]["coarse"]["knn"]["f1_macro"]
    # kNN (k=15) never predicts the 5 labelled platelets; logistic regression does
    assert m["labels"]["coarse"]["knn"]["per_class"]["Platelet"]["f1"] == 0
    assert m["labels"]["coarse"]["logreg"]["f1_macro"] > 0.9
    assert m["baseline_f1_macro"] == m["baseline"]["labels"]["coarse"]["knn"]["f1_macro"]
    assert m["baseline"]["method"] == "pca"
    assert m["baseline"]["n_comps"] == 5
    for tree in (m, m["baseline"]):
        assert set(tree["labels"]) == set(tree["label_efficiency"]) == {"coarse", "fine"}
        entry = tree["labels"]["coarse"]
        assert entry["n_unlabelled"] == obs["coarse"].isna().sum() == 13
        assert entry["support"]["Platelet"] == 5  # one of the 6 is unlabelled
        for method in ("knn", "logreg"):
            scores = entry[method]
            assert {"accuracy", "balanced_accuracy", "f1_macro", "f1_weighted", "auroc"} <= set(
                scores
            )
            assert set(scores["per_class"]["Platelet"]) == {"precision", "recall", "f1", "support"}
            assert scores["confusion_matrix"]["classes"] == ["B", "Mono", "Platelet", "T"]
            assert entry["from_visible"][method]["n_cells"] == entry["from_visible"]["n_evaluated"]
        assert entry["cv"]["n_splits"] == 5
        curves = tree["label_efficiency"]["fine"]
        assert set(curves) == {"fractions", "knn", "logreg", "label_propagation"}
        point = curves["logreg"]["0.05"]
        assert point["n_repeats"] == 2
        assert point["f1_macro"] == pytest.approx(np.mean(point["values"]))
        assert point["f1_macro_sd"] == pytest.approx(np.std(point["values"], ddof=1))
        quality = tree["latent_quality"]["coarse"]
        assert {"silhouette", "ari", "nmi"} <= set(quality)
    # the rare class at 5 %: one labelled platelet, fewer than k, said in the metrics
    assert m["label_efficiency"]["coarse"]["fractions"]["0.05"]["classes_below_k"]["Platelet"] == 1
    assert "knn" in m["protocol"]["rare_classes"]
    assert m["protocol"]["label_fractions"] == [0.05, 0.5]
    # the same draws for both representations
    assert (
        m["label_efficiency"]["fine"]["fractions"]
        == m["baseline"]["label_efficiency"]["fine"]["fractions"]
    )


def test_classifier_head_scores_and_its_point_on_the_curve(cells):
    latent, _, obs = cells
    cfg = dataclass_replace_baseline(run_config(), "none")
    codes = pd.factorize(obs["coarse"], sort=True)[0]
    visible = np.zeros(len(obs), dtype=bool)
    visible[::10] = True
    proba = np.eye(4)[np.where(codes >= 0, codes, 0)]  # a perfect head
    proba[1] = [0.0, 0.0, 0.0, 1.0] if codes[1] != 3 else [1.0, 0.0, 0.0, 0.0]  # one mistake
    obs = obs.assign(**{VISIBLE_KEY: visible})
    m = evaluate_run(latent, obs, cfg, head=("coarse", proba, list(NAMES))).metrics
    joint = m["labels"]["coarse"]["joint"]
    hidden = (codes >= 0) & ~visible
    assert joint["n_evaluated"] == hidden.sum()
    assert joint["accuracy"] == pytest.approx(1 - 1 / hidden.sum())
    assert m["joint_f1_macro"] == joint["f1_macro"]
    assert m["label_efficiency"]["coarse"]["joint"] == {
        "0.05": {
            "f1_macro": joint["f1_macro"],
            "f1_macro_sd": None,
            "n_repeats": 1,
            "values": [joint["f1_macro"]],
            "n_labelled": int(visible.sum()),
        }
    }
    # kNN / logistic regression on the head's visible cells are scored on the same cells
    assert m["labels"]["coarse"]["from_visible"]["n_evaluated"] == joint["n_evaluated"]
    assert "baseline" not in m
    table = summary_table(m)
    assert set(table["representation"]) == {"vae"}
    assert {"cv", "0.05", "0.5"} <= set(table["fraction"])
    assert "joint" in set(table["method"])


def dataclass_replace_baseline(cfg: Config, method: str) -> Config:
    import dataclasses

    return dataclasses.replace(cfg, baseline=dataclasses.replace(cfg.baseline, method=method))


def test_cross_validation_keeps_only_labelled_cells_and_classes_below_folds(cells):
    latent, _, obs = cells
    m = evaluate_latent(latent, obs, EvalConfig(label_keys=("coarse",), n_folds=8), seed=0)
    entry = m["labels"]["coarse"]
    assert entry["n_labelled"] == len(obs) - 13
    assert entry["cv"]["classes_below_folds"] == {"Platelet": 5}  # one platelet is unlabelled
    assert entry["knn"]["per_class"]["Platelet"]["support"] == 5


def test_errors_name_the_label_column(cells):
    latent, expression, obs = cells
    with pytest.raises(DataError, match="'missing'"):
        evaluate_latent(latent, obs, EvalConfig(label_keys=("missing",)), seed=0)
    one = pd.DataFrame({"k": ["a"] * len(obs)})
    with pytest.raises(DataError, match="single class"):
        evaluate_latent(latent, one, EvalConfig(label_keys=("k",)), seed=0)
    none = pd.DataFrame({"k": [None] * len(obs)})
    with pytest.raises(DataError, match="labelled cells"):
        evaluate_latent(latent, none, EvalConfig(label_keys=("k",)), seed=0)
    with pytest.raises(DataError, match="rows"):
        evaluate_run(latent[:-1], obs, run_config(), expression=expression)
    with pytest.raises(DataError, match="expression matrix"):
        evaluate_run(latent, obs, run_config())


def test_label_propagation_has_its_own_graph_size(cells):
    """``eval.propagation_neighbors`` sizes the propagation graph only: kNN is unchanged."""
    latent, _, obs = cells
    visible = np.zeros(len(obs), dtype=bool)
    runs = {
        k: evaluate_representation(
            latent, obs, run_config(propagation_neighbors=k).eval, seed=0, visible=visible
        )[0]
        for k in (3, 40)
    }
    curve = {k: r["label_efficiency"]["coarse"] for k, r in runs.items()}
    assert curve[3]["knn"] == curve[40]["knn"]
    assert curve[3]["label_propagation"] != curve[40]["label_propagation"]


@pytest.mark.slow
def test_annotations_reuse_the_evaluation(cells):
    """annotated.h5ad's predictions are the ``from_visible`` fits that metrics.json scores, its
    UMAP graph is scanpy's layout of neighbours, and the labels become sorted categoricals
    (slow: umap-learn compiles its layout, about 2 s per process)."""
    from src.app.core.eval import annotations

    latent, expression, obs = cells
    cfg = run_config()
    evaluation = evaluate_run(latent, obs, cfg, expression=expression)
    added = annotations(latent, obs, evaluation, cfg)
    proba = evaluation.predictions["coarse"]["knn"]
    predicted = np.asarray(added.obs["predicted_coarse_knn"])
    assert list(predicted) == list(NAMES[proba.argmax(axis=1)])
    hidden = ~evaluation.visible & obs["coarse"].notna().to_numpy()
    codes = pd.Categorical(obs["coarse"], categories=list(NAMES)).codes
    accuracy = np.mean(proba.argmax(axis=1)[hidden] == codes[hidden])
    knn = evaluation.metrics["labels"]["coarse"]["from_visible"]["knn"]
    assert accuracy == pytest.approx(knn["accuracy"])
    assert added.obsm["X_umap"].shape == (len(obs), 2)
    graph = added.obsp["connectivities"]
    assert (graph != graph.T).nnz == 0  # symmetric fuzzy union
    assert added.uns["neighbors"]["params"]["n_neighbors"] == cfg.viz.n_neighbors
    assert list(added.obs["coarse"].categories) == list(NAMES)
    assert json.loads(added.uns["metrics"])["f1_macro"] == evaluation.metrics["f1_macro"]


@pytest.mark.slow
def test_umap_graph_is_umap_learns():
    """The NumPy fuzzy simplicial set equals umap-learn's own (which numba compiles per process,
    about 6 s: hence slow)."""
    from umap.umap_ import fuzzy_simplicial_set

    from src.app.core.data.graph import nearest_neighbours
    from src.app.core.evaluate.umap import fuzzy_graph

    points, _ = blobs([60, 40, 30], dim=5)
    idx, dist = nearest_neighbours(points, n_neighbors=14)
    ours, _ = fuzzy_graph(idx, dist)
    rows = np.arange(len(points))[:, None]
    theirs, _, _ = fuzzy_simplicial_set(
        points, 15, 0, "euclidean",
        knn_indices=np.hstack([rows, idx]),
        knn_dists=np.hstack([np.zeros_like(rows, dtype=float), dist]).astype(np.float32),
    )  # fmt: skip
    assert abs(theirs.tocsr() - ours).max() < 1e-5


@pytest.mark.slow
def test_umap_layout_is_umap_learns_with_or_without_the_cached_compile():
    """The layout compiled with numba's disk cache is umap-learn's own, coordinate for
    coordinate, and umap-learn's function is back in place afterwards."""
    from sklearn.utils import check_random_state
    from umap import layouts
    from umap.umap_ import find_ab_params, simplicial_set_embedding

    from src.app.core.data.graph import nearest_neighbours
    from src.app.core.evaluate.umap import fuzzy_graph, umap_layout

    own = layouts._nb_optimize_layout_euclidean_single_epoch
    points, _ = blobs([60, 40, 30], dim=5)
    idx, dist = nearest_neighbours(points, n_neighbors=14)
    graph, _ = fuzzy_graph(idx, dist)
    a, b = find_ab_params(1.0, 0.5)
    ours = umap_layout(points, graph, a=a, b=b, seed=3)
    assert layouts._nb_optimize_layout_euclidean_single_epoch is own
    theirs, _ = simplicial_set_embedding(
        points, graph.tocoo(), 2, 1.0, a, b, 1.0, 5, None, "spectral", check_random_state(3),
        "euclidean", {}, False, {}, False,
    )  # fmt: skip
    np.testing.assert_array_equal(ours, np.asarray(theirs, dtype=np.float32))
