"""The batch covariate: it reaches encoder and decoder, survives the checkpoint, and a batch the
model has not seen, a missing column or a cell without a batch is refused by name."""

import numpy as np
import pandas as pd
import pytest
import torch

from src.app.core.data.codes import batch_codes
from src.app.core.data_adapter import DataAdapter
from src.app.core.model.embed import run_embedding
from src.app.core.model.nn import VAE, VAEConfig, resolve_decoder
from src.app.core.model_adapter import ModelAdapter
from src.app.errors import CheckpointError, DataError
from tests.conftest import small_config


def with_samples(adata, names=("s1", "s2")):
    """A copy whose cells take the batch names in turn (obs['sample'])."""
    adata = adata.copy()
    adata.obs["sample"] = pd.Categorical(np.resize(np.asarray(names), adata.n_obs))
    return adata


@pytest.mark.parametrize("decoder", ["linear", "mlp"])
@pytest.mark.parametrize("likelihood", ["gaussian", "zinb"])
def test_batch_covariate_reaches_encoder_and_decoder(decoder, likelihood):
    torch.manual_seed(0)
    cfg = VAEConfig(20, 3, (8,), 0.0, likelihood, n_batches=3, decoder=decoder)
    module = VAE(cfg).eval()
    assert module.encoder[0].in_features == 20 + 3
    x = torch.rand(5, 20) * 3
    first, second = torch.zeros(5, dtype=torch.long), torch.full((5,), 2)
    with torch.no_grad():
        assert not torch.allclose(module.inference(x, first)[0], module.inference(x, second)[0])
        z, library = torch.randn(5, 3), torch.full((5, 1), 5.0)
        target = torch.poisson(torch.ones(5, 20))
        one = module.log_likelihood(z, target, library, batch=first)
        other = module.log_likelihood(z, target, library, batch=second)
    assert not torch.allclose(one, other)
    with pytest.raises(ValueError, match="3 batches"):
        module.inference(x)


def test_auto_decoder_is_linear_without_batches_and_mlp_with_two_or_more():
    assert [resolve_decoder("auto", n) for n in (0, 1, 2, 5)] == ["linear", "linear", "mlp", "mlp"]
    assert [resolve_decoder(d, 3) for d in ("linear", "mlp")] == ["linear", "mlp"]
    assert resolve_decoder("mlp", 0) == "mlp"


def test_batches_round_trip_through_the_checkpoint(tmp_path, runtime, pre_adata):
    cfg = small_config(tmp_path, data={"batch_key": "sample"})
    adata = with_samples(pre_adata, ("b", "a", "c"))
    data = DataAdapter(cfg, runtime=runtime, adata=adata)
    assert data.batch_categories == ["a", "b", "c"]
    model = ModelAdapter(cfg, runtime=runtime)
    model.fit(data)
    before = model.predict(data.iter_all_batches())
    model.save(tmp_path / "model")
    loaded = ModelAdapter(cfg, runtime=runtime).load(tmp_path / "model")
    assert (loaded.batch_key, loaded.batch_categories) == ("sample", ["a", "b", "c"])
    assert loaded.module.cfg.n_batches == 3
    # the default decoder (auto) resolved to the MLP for three batches, and the checkpoint says so
    assert cfg.model.decoder == "auto"
    assert model.module.cfg.decoder == loaded.module.cfg.decoder == "mlp"
    again = DataAdapter(cfg, runtime=runtime, adata=adata, batch_categories=["a", "b", "c"])
    np.testing.assert_allclose(loaded.predict(again.iter_all_batches()), before, atol=1e-6)
    # an array of encoder inputs with the batch codes gives the same latent
    codes = pd.Categorical(adata.obs["sample"], categories=["a", "b", "c"]).codes
    x = adata.X.toarray()
    np.testing.assert_allclose(loaded.predict(x, codes), before, atol=1e-5)
    with pytest.raises(ValueError, match="batches"):
        loaded.predict(x)
    # the batch decides the latent: every cell as batch 'a' moves it
    assert not np.allclose(loaded.predict(x, np.zeros_like(codes)), before, atol=1e-3)


def test_a_batch_the_model_has_not_seen_is_refused(tmp_path, runtime, pre_adata):
    cfg = small_config(tmp_path, data={"batch_key": "sample"})
    adata = with_samples(pre_adata, ("s1", "s2", "s3"))
    with pytest.raises(DataError, match=r"not trained on: \['s3'\]"):
        DataAdapter(cfg, runtime=runtime, adata=adata, batch_categories=["s1", "s2"])


def test_batch_key_names_a_column_and_every_cell_has_a_batch():
    obs = pd.DataFrame({"sample": ["a", None, "b"]}, index=["c1", "c2", "c3"])
    with pytest.raises(DataError, match=r"'donor' is not a column.*'sample'"):
        batch_codes(obs, "donor", known=None, where="data")
    with pytest.raises(DataError, match=r"1 of 3 cells.*no batch"):
        batch_codes(obs, "sample", known=None, where="data")
    categories, codes = batch_codes(obs.fillna("b"), "sample", known=None, where="data")
    assert categories == ["a", "b"]
    assert codes.tolist() == [0, 1, 1]
    assert batch_codes(obs, None, known=None, where="data")[1].tolist() == [0, 0, 0]
    with pytest.raises(DataError, match=r"trained with 2 batches but data\.batch_key is null"):
        batch_codes(obs, None, known=["a", "b"], where="data")


def test_embedding_refuses_a_batch_key_other_than_the_checkpoints(tmp_path, runtime, pre_adata):
    cfg = small_config(tmp_path, data={"batch_key": "sample"}, train={"epochs": 1})
    adata = with_samples(pre_adata)
    model = ModelAdapter(cfg, runtime=runtime)
    model.fit(DataAdapter(cfg, runtime=runtime, adata=adata))
    model.save(tmp_path / "model")
    adata.write_h5ad(tmp_path / "pre.h5ad")
    paths = {"latent_out": tmp_path / "z.npy", "h5ad_out": tmp_path / "emb.h5ad"}
    with pytest.raises(CheckpointError, match="batch_key 'sample', the config says None"):
        run_embedding(
            small_config(tmp_path),
            model_dir=tmp_path / "model",
            data_path=tmp_path / "pre.h5ad",
            runtime=runtime,
            **paths,
        )
    assert not any(p.exists() for p in paths.values())
    latent = run_embedding(
        cfg, model_dir=tmp_path / "model", data_path=tmp_path / "pre.h5ad", runtime=runtime, **paths
    )
    assert latent.shape == (adata.n_obs, 4)


def test_highly_variable_genes_are_chosen_per_batch(raw_adata):
    from src.app.config import PreprocessConfig
    from src.app.core.data.preprocess import preprocess

    raw = with_samples(raw_adata)
    pre = preprocess(raw, PreprocessConfig(n_top_genes=100), seed=0, batch_key="sample")
    assert pre.uns["preprocess"]["batch_key"] == "sample"
    assert "highly_variable_nbatches" in pre.var  # scanpy's per-batch selection ran
    assert list(pre.obs["sample"].cat.categories) == ["s1", "s2"]
    with pytest.raises(DataError, match="'donor' is not a column"):
        preprocess(raw, PreprocessConfig(n_top_genes=100), seed=0, batch_key="donor")


def test_with_a_transfer_key_the_head_sees_reference_labels_only(tmp_path, runtime, pre_adata):
    adata = with_samples(pre_adata, ("ctrl", "stim"))
    plain = DataAdapter(small_config(tmp_path), runtime=runtime, adata=adata)
    cfg = small_config(tmp_path, eval={"transfer_key": "sample", "transfer_reference": ["ctrl"]})
    data = DataAdapter(cfg, runtime=runtime, adata=adata)
    stim = (adata.obs["sample"] == "stim").to_numpy()
    assert plain.label_visible[stim].any()  # without the key both sides show labels
    assert not data.label_visible[stim].any()
    assert data.label_visible[~stim].sum() >= len(data.label_categories)
    from src.app.core.data.labels import visible_cells

    assert (visible_cells(adata.obs, cfg) == data.label_visible).all()
