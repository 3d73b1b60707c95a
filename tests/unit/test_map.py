"""The map stage: genes aligned by name (reordered, missing, none shared), the refit on shared
genes, architecture surgery for unseen batches, unknown calls, and nothing written on bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from src.app.cli import main
from src.app.core.data.query import plan_genes, prepare_query
from src.app.core.data_adapter import DataAdapter
from src.app.core.map.predict import UNKNOWN, latent_distances, unknown_cells
from src.app.core.map.run import map_query
from src.app.core.model.nn import VAE, VAEConfig
from src.app.core.model.surgery import fit_new_batches, with_new_batches
from src.app.core.model_adapter import ModelAdapter
from src.app.errors import DataError
from tests.conftest import profile_dict, small_config

KEY = "cell_type_coarse"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, pre_adata, raw_adata):
    """A small model trained on the synthetic reference, its folder and the raw reference."""
    from src.app.machine import Runtime

    root = tmp_path_factory.mktemp("map")
    runtime = Runtime("cpu", 1, 1, 64, 2e-3, 30, False, 4.0, 0.9)
    cfg = small_config(root, map={"epochs": 5})
    model = ModelAdapter(cfg, runtime=runtime)
    model.fit(DataAdapter(cfg, runtime=runtime, adata=pre_adata))
    model.save(root / "model")
    raw_adata.write_h5ad(root / "raw.h5ad")
    return cfg, runtime, root


def query_of(raw_adata, *, drop: float = 0.0, seed: int = 0):
    """The raw reference's cells with genes shuffled and a share ``drop`` of them removed."""
    rng = np.random.default_rng(seed)
    genes = rng.permutation(raw_adata.var_names)
    keep = genes[: round(len(genes) * (1 - drop))]
    return raw_adata[:, keep].copy()


def test_reordered_genes_give_the_same_input(raw_adata):
    genes = list(raw_adata.var_names[:50])
    direct = prepare_query(raw_adata, genes, target_sum=1e4, where="q")
    shuffled = prepare_query(query_of(raw_adata), genes, target_sum=1e4, where="q")
    assert list(shuffled.var_names) == genes
    np.testing.assert_allclose(shuffled.X.toarray(), direct.X.toarray(), rtol=1e-6)


def test_missing_genes_are_zero_filled_and_counted(raw_adata):
    genes = [*raw_adata.var_names[:20], "NOT_A_GENE"]
    query = prepare_query(raw_adata, genes, target_sum=1e4, where="q")
    assert query.X[:, -1].nnz == 0
    assert query.layers["counts"][:, -1].nnz == 0
    plan = plan_genes(genes, raw_adata.var_names, raw_adata.var_names, min_shared=2, where="q")
    assert plan.missing == ["NOT_A_GENE"]
    assert plan.describe()["missing"] == 1


def test_no_shared_gene_fails_naming_the_numbers(raw_adata):
    with pytest.raises(DataError, match=r"only 0 of its 3 genes .*min_shared_genes=200"):
        plan_genes(list(raw_adata.var_names), ["A", "B", "C"], raw_adata.var_names,
                   min_shared=200, where="query q.h5ad")  # fmt: skip


def test_surgery_trains_only_the_new_batch_columns():
    torch.manual_seed(0)
    module = VAE(VAEConfig(12, 3, (8,), 0.1, "gaussian", n_batches=2, decoder="mlp")).eval()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    grown = with_new_batches(module, 2)
    x = torch.rand(40, 12)

    class B:  # a minibatch as DataAdapter gives it
        def __init__(self, code):
            self.x, self.target, self.library = x, x, torch.zeros(40, 1)
            self.labels, self.batch, self.n_cells = (
                torch.full((40,), -1),
                torch.full((40,), code),
                40,
            )

    losses = fit_new_batches(grown, lambda: [B(2), B(3)], epochs=5, lr=1e-2, grad_clip_norm=10.0)
    assert losses[-1] < losses[0]
    state = grown.state_dict()
    for name, old in before.items():
        new = state[name]
        if new.shape == old.shape:
            assert torch.equal(new, old), name  # batch-norm statistics included
        else:
            assert torch.equal(new[:, : old.shape[1]], old), name
            assert new[:, old.shape[1] :].abs().sum() > 0, name
    with torch.no_grad():  # reference cells embed as before
        codes = torch.zeros(40, dtype=torch.long)
        # the same weights; only the zero columns change the float summation order
        # (numpy's check with torch.testing's float32 tolerances: torch.testing imports
        # torch.distributed and sympy, 0.6 s)
        np.testing.assert_allclose(
            module.inference(x, codes)[0].numpy(),
            grown.inference(x, codes)[0].numpy(),
            rtol=1.3e-6,
            atol=1e-5,
        )


def test_unknown_cells_flag_a_missing_population_not_a_shifted_one():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0]])
    ref = np.vstack([c + rng.normal(size=(100, 2)) for c in centres])
    ref_labels = np.repeat(["a", "b"], 100)
    novel = np.array([5.0, 8.0]) + rng.normal(size=(60, 2))
    query = np.vstack([ref[:100] + rng.normal(scale=0.3, size=(100, 2)), novel])
    predicted = np.r_[np.full(100, "a"), np.full(60, "b")]
    batches = np.full(160, "q")
    d_ref, d_query = latent_distances(ref, query)
    unknown, _ = unknown_cells(d_ref, d_query, ref_labels, predicted, query_latent=query,
                               query_batches=batches, quantile=0.1)  # fmt: skip
    assert unknown[100:].mean() > 0.9
    assert unknown[:100].mean() < 0.05
    shifted = ref + rng.normal(scale=1.5, size=ref.shape)  # every cell farther than the reference's
    d_ref, d_query = latent_distances(ref, shifted)
    unknown, _ = unknown_cells(d_ref, d_query, ref_labels, ref_labels, query_latent=shifted,
                               query_batches=np.full(200, "q"), quantile=0.1)  # fmt: skip
    assert unknown.mean() < 0.05


# the tests below train a model and map end to end: behind the slow marker (.ci/run runs them)
@pytest.mark.slow
@pytest.mark.parametrize("drop", [0.05, 0.6])
def test_map_query_labels_the_query(trained, pre_adata, raw_adata, drop):
    cfg, runtime, root = trained
    query = query_of(raw_adata, drop=drop)
    mapped = map_query(cfg, model_dir=root / "model", reference=pre_adata,
                       raw_reference=root / "raw.h5ad", query=query, runtime=runtime,
                       where="q")  # fmt: skip
    obs = mapped.annotated.obs
    assert (mapped.refit is not None) == (drop > 0.1)  # 60 % missing: refit on shared genes
    assert mapped.annotated.obsm["X_vae"].shape == (query.n_obs, cfg.model.latent_dim)
    assert obs[f"{KEY}_confidence"].between(0, 1).all()
    truth, called = obs[KEY].astype(object), obs[f"predicted_{KEY}"].astype(str)
    labelled = truth.notna().to_numpy()
    assert (called[labelled] == truth[labelled].astype(str)).mean() > 0.9
    assert mapped.metrics["label_keys"][KEY]["macro_f1"] > 0.9


@pytest.mark.slow
def test_an_unseen_batch_is_learned_and_a_missing_type_lies_far(tmp_path, pre_adata,
                                                                      raw_adata, runtime):  # fmt: skip
    adata = pre_adata[pre_adata.obs[KEY].astype(str) != "B"].copy()  # the reference lacks B
    adata.obs["sample"] = pd.Categorical(np.resize(["s1", "s2"], adata.n_obs))
    cfg = small_config(tmp_path, data={"batch_key": "sample"}, train={"epochs": 30},
                       map={"epochs": 5, "batch_key": "lane"})  # fmt: skip
    run = dataclasses.replace(runtime, epochs=30, lr=2e-3)
    model = ModelAdapter(cfg, runtime=run)
    model.fit(DataAdapter(cfg, runtime=run, adata=adata))
    model.save(tmp_path / "model")
    query = raw_adata.copy()
    query.obs["lane"] = "new-lane"  # a batch the model has never seen
    mapped = map_query(cfg, model_dir=tmp_path / "model", reference=adata, raw_reference=None,
                       query=query, runtime=run, where="q")  # fmt: skip
    assert mapped.annotated.uns["map"]["surgery_epochs"] == 5
    called = mapped.annotated.obs[f"predicted_{KEY}"].astype(str).to_numpy()
    is_b = query.obs[KEY].astype(str).to_numpy() == "B"
    # this tiny model puts B near T, so its calls are left to the test above; B lies farther
    distance = mapped.annotated.obs["unknown_distance"].to_numpy()
    assert np.median(distance[is_b]) > 1.2 * np.median(distance[~is_b])
    assert (called[is_b] == UNKNOWN).mean() > 5 * (called[~is_b] == UNKNOWN).mean()
    labelled = ~is_b & query.obs[KEY].notna().to_numpy()
    assert (called[labelled] == query.obs[KEY].astype(str).to_numpy()[labelled]).mean() > 0.9


@pytest.mark.slow
def test_map_stage_writes_nothing_on_bad_input(trained, raw_adata, tmp_path, capsys):
    _cfg, _, root = trained
    bad = raw_adata.copy()
    bad.var_names = [f"OTHER{i}" for i in range(bad.n_vars)]  # no gene in common
    bad.write_h5ad(tmp_path / "bad.h5ad")
    (tmp_path / "config.yml").write_text(yaml.safe_dump(profile_dict(annotation_threads=1)))
    run = {"paths": {"machine_profile": str(tmp_path / "config.yml")}, "data": {"labels": None}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    out = tmp_path / "query" / "annotated.h5ad"
    code = main(["map", "--config", str(tmp_path / "run.yaml"), "--model_dir",
                 str(root / "model"), "--reference", str(root / "raw.h5ad"), "--input",
                 str(tmp_path / "bad.h5ad"), "--output", str(out)])  # fmt: skip
    assert code == 2
    assert "only 0 of its 600 genes" in capsys.readouterr().err
    assert not out.parent.exists() or not any(out.parent.iterdir())
