"""The batch covariate in the evaluation: Harmony on the PCA baseline, scib-metrics' batch scores,
cross-batch label transfer, their metrics.json sections and the UMAP panel by batch, on small
synthetic data with planted batch effects."""

import dataclasses
import re

import numpy as np
import pandas as pd
import pytest

from src.app.config import BaselineConfig, config_from_dict
from src.app.core.data.graph import nearest_neighbours
from src.app.core.data.synthetic import synthetic_counts
from src.app.core.evaluate import integration
from src.app.core.evaluate.baseline import harmony, pca_representation
from src.app.core.evaluate.batch import (
    BATCH_CORRECTION,
    BIO_CONSERVATION,
    _aggregate,
    batch_metrics,
    cross_batch_transfer,
)
from src.app.core.evaluate.run import evaluate_run, summary_table
from src.app.errors import ConfigError, DataError

AGGREGATES = ("bio_conservation", "batch_correction", "total")


@pytest.fixture(scope="module")
def batched():
    """300 synthetic cells in 2 batches; batch 1's counts are scaled per gene (a planted batch
    effect) before log-normalisation. Returns the obs (labels, batch, condition), the
    log-normalised expression and its PCA."""
    adata = synthetic_counts(n_cells=300, n_genes=300, seed=0)
    rng = np.random.default_rng(1)
    batch = rng.integers(0, 2, adata.n_obs)
    x = adata.X.toarray()
    x[batch == 1] = rng.poisson(x[batch == 1] * rng.lognormal(0, 1.0, size=x.shape[1]))
    x = np.log1p(x / x.sum(axis=1, keepdims=True) * 1e4).astype(np.float32)
    obs = adata.obs.assign(
        batch=pd.Categorical(np.array(["b0", "b1"])[batch]),
        condition=np.where(np.arange(adata.n_obs) % 3 == 0, "stim", "ctrl"),
    )
    return obs, x, pca_representation(x, BaselineConfig(n_comps=10), seed=0)


def mixing(rep: np.ndarray, batches: np.ndarray) -> float:
    """Share of each cell's 15 nearest neighbours from another batch (0.5: well mixed)."""
    idx, _ = nearest_neighbours(rep, n_neighbors=15)
    return float(np.mean(batches[idx] != batches[:, None]))


def purity(rep: np.ndarray, labels: np.ndarray) -> float:
    idx, _ = nearest_neighbours(rep, n_neighbors=15)
    return float(np.mean(labels[idx] == labels[:, None]))


def test_harmony_mixes_a_planted_batch_shift_and_keeps_cell_types(batched):
    obs, _, pca = batched
    batches = obs["batch"].to_numpy()
    corrected = harmony(pca, batches, seed=0)
    assert corrected.shape == pca.shape
    assert corrected.dtype == np.float32
    before, after = mixing(pca, batches), mixing(corrected, batches)
    assert before < 0.05  # measured: 0.012 -> 0.22
    assert after > 0.15
    types = obs["cell_type"].astype(str).to_numpy()
    assert purity(corrected, types) > purity(pca, types) - 0.03
    np.testing.assert_array_equal(corrected, harmony(pca, batches, seed=0))  # seeded
    one = harmony(pca, np.zeros(len(pca)), seed=0)  # a single batch: nothing to correct
    np.testing.assert_array_equal(one, pca)


def planted(n_per: int = 60, *, shift: float, seed: int = 0):
    """3 cell types x 2 batches in 6 dimensions; batch 1 moved by ``shift`` along one axis."""
    rng = np.random.default_rng(seed)
    types = np.repeat(np.arange(3), 2 * n_per)
    batches = np.tile(np.repeat([0, 1], n_per), 3)
    centres = np.eye(3, 6) * 8
    rep = centres[types] + rng.normal(size=(len(types), 6))
    rep[:, 5] += shift * batches
    return rep.astype(np.float32), np.array(["A", "B", "C"], dtype=object)[types], batches


def test_aggregates_are_benchmarkers_raw_means_with_missing_metrics_skipped():
    scores = dict.fromkeys(BIO_CONSERVATION, 0.5) | dict.fromkeys(BATCH_CORRECTION, 0.25)
    scores["isolated_labels"] = float("nan")  # no isolated label
    scores["silhouette_label"] = 0.9
    out = _aggregate(scores)
    assert out["isolated_labels"] is None
    assert out["bio_conservation"] == pytest.approx((0.5 * 3 + 0.9) / 4)
    assert out["batch_correction"] == pytest.approx(0.25)
    assert out["total"] == pytest.approx(0.6 * out["bio_conservation"] + 0.4 * 0.25)


def test_batch_metrics_leave_unlabelled_cells_out(monkeypatch):
    """Every metric sees only the labelled cells, of each representation and of the
    pre-integrated PCA."""
    from src.app.core.evaluate import batch

    seen = []
    monkeypatch.setattr(
        batch, "_scores", lambda rep, y, b, pre: seen.append((rep, y, b, pre)) or {}
    )
    rep, labels, batches = planted(shift=0)
    labels = labels.copy()
    labels[::7] = None
    batch_metrics({"a": rep}, labels, batches, pre_integrated=rep * 2, seed=0)
    (got, y, b, pre), known = seen[0], pd.notna(labels)
    np.testing.assert_array_equal(got, rep[known])
    np.testing.assert_array_equal(pre, rep[known] * 2)
    assert list(y) == list(labels[known])
    assert list(b) == [str(v) for v in batches[known]]
    with pytest.raises(DataError, match="rows"):
        batch_metrics({"a": rep[:-1]}, labels, batches, pre_integrated=None, seed=0)


@pytest.mark.slow
def test_batch_metrics_score_a_mixed_embedding_above_a_split_one():
    """scib-metrics itself (slow: jax compiles each metric on its first call, about 20 s per
    process on 2 cores): every metric in [0, 1], batch correction higher for the mixed
    embedding, and the aggregates equal the Benchmarker's get_results(min_max_scale=False)."""
    from scib_metrics.benchmark import BatchCorrection, Benchmarker

    mixed, labels, batches = planted(shift=0)
    split, _, _ = planted(shift=12)
    scores = batch_metrics(
        {"mixed": mixed, "split": split}, labels, batches, pre_integrated=split, seed=0
    )
    for name in ("mixed", "split"):
        for metric in (*BIO_CONSERVATION, *BATCH_CORRECTION, *AGGREGATES):
            assert 0 <= scores[name][metric] <= 1 + 1e-6, (name, metric)
    assert scores["mixed"]["batch_correction"] > scores["split"]["batch_correction"] + 0.3
    assert scores["mixed"]["ilisi_knn"] > scores["split"]["ilisi_knn"] + 0.5
    assert scores["split"]["pcr_comparison"] == 0  # the pre-integrated embedding itself
    import anndata as ad

    from src.app.core.evaluate.batch import _neighbours

    adata = ad.AnnData(
        np.zeros((len(labels), 1)),
        obs=pd.DataFrame(
            {"l": labels.astype(str), "b": batches.astype(str)},
            index=[f"c{i}" for i in range(len(labels))],
        ),
        obsm={"mixed": mixed, "split": split, "pre": split},
    )
    bench = Benchmarker(
        adata, "b", "l", ["mixed", "split"],
        batch_correction_metrics=BatchCorrection(kbet_per_label=False),
        pre_integrated_embedding_obsm_key="pre", progress_bar=False,
    )  # fmt: skip
    bench.prepare(neighbor_computer=_neighbours)
    bench.benchmark()
    theirs = bench.get_results(min_max_scale=False, clean_names=False)
    for name in ("mixed", "split"):
        assert float(theirs.loc[name, "Total"]) == pytest.approx(scores[name]["total"], abs=1e-5)
        assert float(theirs.loc[name, "Batch correction"]) == pytest.approx(
            scores[name]["batch_correction"], abs=1e-5
        )


def test_cross_batch_transfer_predicts_the_other_batches(batched):
    obs, _, pca = batched
    ref = obs["condition"] == "ctrl"
    out = cross_batch_transfer(
        {"pca": pca}, obs, label_keys=["cell_type", "cell_type_coarse"], transfer_key="condition",
        reference=["ctrl"], n_neighbors=15, seed=0,
    )  # fmt: skip
    assert out["n_reference"] == ref.sum() == 200
    assert out["n_predicted"] == 100
    assert out["query"] == ["stim"]
    entry = out["labels"]["cell_type"]
    labelled = obs["cell_type"].notna()
    assert entry["n_evaluated"] == (~ref & labelled).sum()
    assert entry["n_train"] == (ref & labelled).sum()
    # kNN's accuracy is scikit-learn's on the same split
    from sklearn.neighbors import KNeighborsClassifier

    train, test = (ref & labelled).to_numpy(), (~ref & labelled).to_numpy()
    y = obs["cell_type"].astype(str).to_numpy()
    knn = KNeighborsClassifier(n_neighbors=15).fit(pca[train], y[train])
    expected = np.mean(knn.predict(pca[test]) == y[test])
    assert entry["pca"]["knn"]["accuracy"] == pytest.approx(expected)
    assert 0.8 < entry["pca"]["logreg"]["f1_macro"] <= 1


def test_cross_batch_transfer_names_a_bad_key_or_value(batched):
    obs, _, pca = batched
    kwargs = {"label_keys": ["cell_type"], "n_neighbors": 15, "seed": 0}
    with pytest.raises(DataError, match=r"'donor'.*available: \[.*'condition'"):
        cross_batch_transfer({"p": pca}, obs, transfer_key="donor", reference=["a"], **kwargs)
    with pytest.raises(DataError, match=r"\['CTRL'\].*available: \['ctrl', 'stim'\]"):
        cross_batch_transfer(
            {"p": pca}, obs, transfer_key="condition", reference=["CTRL"], **kwargs
        )
    with pytest.raises(DataError, match="every cell"):
        cross_batch_transfer(
            {"p": pca}, obs, transfer_key="condition", reference=["ctrl", "stim"], **kwargs
        )


def test_config_checks_the_transfer_keys():
    ok = config_from_dict({"eval": {"transfer_key": "c", "transfer_reference": ["x"]}})
    assert ok.eval.transfer_reference == ("x",)
    assert ok.baseline.harmony is True
    bad = [
        ({"transfer_reference": ["x"]}, "eval.transfer_reference"),
        ({"transfer_key": "c"}, "eval.transfer_reference"),
        ({"transfer_key": " "}, "eval.transfer_key"),
        ({"transfer_key": "c", "transfer_reference": ["x", "x"]}, "eval.transfer_reference"),
    ]
    for values, key in bad:
        with pytest.raises(ConfigError, match=re.escape(key)):
            config_from_dict({"eval": values})
    with pytest.raises(ConfigError, match=r"baseline\.harmony"):
        config_from_dict({"baseline": {"harmony": "yes"}})


def run_config(**data):
    return config_from_dict(
        {
            "data": data,
            "eval": {"label_keys": ["cell_type"], "label_fractions": [0.5], "n_repeats": 1},
            "baseline": {"n_comps": 10},
            "annotation": {"label_key": "cell_type"},
        }
    )


def test_without_a_batch_key_metrics_have_no_batch_section(batched):
    obs, x, pca = batched
    evaluation = evaluate_run(pca, obs, run_config(), expression=x)
    m = evaluation.metrics
    assert "batch" not in m
    assert "transfer" not in m
    assert "batch" not in m["protocol"]
    assert "transfer" not in m["protocol"]
    assert m["baseline"]["method"] == "pca"
    assert evaluation.harmony is None
    assert set(summary_table(m)["representation"]) == {"vae", "pca"}


def test_a_batch_key_harmonises_the_baseline_and_adds_the_sections(batched, monkeypatch):
    """The wiring (scib-metrics replaced by a recorder; its scores are tested above): the
    baseline is the PCA after Harmony, the batch section scores the latent and both PCAs on the
    labelled cells, and the transfer section and its summary rows are there."""
    obs, x, pca = batched
    calls = []

    def fake(embeddings, labels, batches, *, pre_integrated, seed):
        calls.append((embeddings, labels, batches, pre_integrated))
        return {name: {"total": 0.5} for name in embeddings}

    monkeypatch.setattr(integration, "batch_metrics", fake)
    cfg = run_config(batch_key="batch")
    cfg = dataclasses.replace(
        cfg,
        eval=dataclasses.replace(cfg.eval, transfer_key="condition", transfer_reference=("ctrl",)),
    )
    latent = pca[:, :4]
    evaluation = evaluate_run(latent, obs, cfg, expression=x)
    m = evaluation.metrics
    assert m["baseline"]["method"] == "pca+harmony"
    np.testing.assert_allclose(evaluation.harmony, harmony(pca, obs["batch"], seed=0))
    np.testing.assert_array_equal(evaluation.pca, pca)
    assert m["batch"]["batch_key"] == "batch"
    assert m["batch"]["n_batches"] == 2
    assert set(m["batch"]["representations"]) == {"vae", "pca", "pca+harmony"}
    _embeddings, labels, _, pre = calls[0]
    np.testing.assert_array_equal(pre, pca)
    assert m["batch"]["n_cells"] == pd.notna(labels).sum() == obs["cell_type"].notna().sum()
    assert m["protocol"]["batch"]["label_key"] == "cell_type"
    assert "kbet_per_label" in m["protocol"]["batch"]["not_computed"]
    transfer = m["transfer"]["labels"]["cell_type"]
    assert set(transfer) >= {"vae", "pca+harmony"}
    assert m["transfer"]["n_predicted"] == 100
    table = summary_table(m)
    rows = table[table["fraction"] == "transfer"]
    assert set(rows["representation"]) == {"vae", "pca+harmony"}
    assert len(rows) == 4
    assert list(integration.batch_table(m)["total"]) == [0.5, 0.5, 0.5]
    with pytest.raises(DataError, match="'nope'"):
        evaluate_run(latent, obs, run_config(batch_key="nope"), expression=x)


def test_umap_gets_a_batch_panel_on_its_own_row(tmp_path):
    import anndata as ad

    from src.app.core.plot.figures import _rows, plot_embedding
    from src.app.core.plot.run import batch_title, umap_panels

    obs = pd.DataFrame(
        {"t": ["a", "b", "a"], "s": pd.Categorical(["x", "y", "y"])}, index=["c0", "c1", "c2"]
    )
    adata = ad.AnnData(np.zeros((3, 1)), obs=obs)
    panels = umap_panels(adata, ["t"], batch_key="s")
    assert list(panels) == ["t: true", batch_title("s")]
    assert umap_panels(adata, ["t"], batch_key="absent").keys() == {"t: true"}
    items = [("a", 0), ("b", 0), ("c", 0), (batch_title("s"), 0)]
    assert [len(r) for r in _rows(items, 2, (batch_title("s"),))] == [2, 1, 1]
    out = tmp_path / "umap.png"
    coords = np.random.default_rng(0).normal(size=(3, 2))
    plot_embedding(coords, panels, out, dpi=20, ncols=2, new_row=(batch_title("s"),))
    assert out.read_bytes()[:4] == b"\x89PNG"
