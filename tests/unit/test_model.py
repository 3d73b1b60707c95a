import json

import numpy as np
import pytest
import torch

from src.app.core.data_adapter import DataAdapter
from src.app.core.model_adapter import META_FILE, WEIGHTS_FILE, ModelAdapter
from src.app.core.train import run_training
from src.app.errors import CheckpointError, DataError
from tests.conftest import replace, small_config


@pytest.fixture
def cfg(tmp_path):
    return small_config(tmp_path)


@pytest.fixture
def data(cfg, runtime, pre_adata):
    return DataAdapter(cfg, runtime=runtime, adata=pre_adata)


def test_dataset_info_and_batches(data, pre_adata, runtime):
    info = data.dataset_info()
    assert info["n_cells"] == pre_adata.n_obs
    assert info["num_hvgs"] == info["n_genes"] == 200
    assert info["n_train"] + info["n_val"] == info["n_cells"]
    sizes = [b.x.shape[0] for b in data.iter_train_batches()]
    assert max(sizes) == runtime.batch_size
    assert sum(sizes) >= info["n_train"] - 1
    first = torch.cat([b.x for b in data.iter_train_batches()])
    second = torch.cat([b.x for b in data.iter_train_batches()])
    assert not torch.equal(first, second)  # a new permutation each epoch
    assert sum(b.x.shape[0] for b in data.iter_val_batches()) == info["n_val"]


def test_fit_lowers_loss_and_predicts_means(cfg, data, runtime, pre_adata):
    model = ModelAdapter(cfg, runtime=replace(runtime, epochs=8))
    history = model.fit(data)
    assert len(history) == 8
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    z = model.predict(data.iter_all_batches())
    assert z.shape == (pre_adata.n_obs, cfg.model.latent_dim)
    z2 = model.predict(pre_adata.X.toarray())
    np.testing.assert_allclose(z, z2, rtol=1e-5, atol=1e-5)


def test_training_is_deterministic(cfg, runtime, pre_adata):
    latents = []
    for _ in range(2):
        data = DataAdapter(cfg, runtime=runtime, adata=pre_adata)
        model = ModelAdapter(cfg, runtime=runtime)
        model.fit(data)
        latents.append(model.predict(data.iter_all_batches()))
    np.testing.assert_array_equal(latents[0], latents[1])


def test_save_load_gives_identical_predictions(cfg, data, runtime, tmp_path):
    model = ModelAdapter(cfg, runtime=runtime)
    model.fit(data)
    model.save(tmp_path / "model")
    loaded = ModelAdapter(cfg, runtime=runtime).load(tmp_path / "model")
    np.testing.assert_array_equal(
        model.predict(data.iter_all_batches()), loaded.predict(data.iter_all_batches())
    )
    assert loaded.gene_names == data.gene_names
    np.testing.assert_array_equal(loaded.module.gene_scale, model.module.gene_scale)
    assert len(loaded.history) == runtime.epochs
    loaded.check_genes(data.gene_names)
    with pytest.raises(CheckpointError, match="1 checkpoint genes missing"):
        loaded.check_genes([*data.gene_names[:-1], "OTHER"])
    with pytest.raises(CheckpointError, match="different order"):
        loaded.check_genes(list(reversed(data.gene_names)))


def test_corrupt_or_missing_checkpoint(cfg, data, runtime, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        ModelAdapter(cfg, runtime=runtime).load(tmp_path / "none")
    model = ModelAdapter(cfg, runtime=runtime)
    model.fit(data)
    model.save(tmp_path / "model")
    (tmp_path / "model" / WEIGHTS_FILE).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable"):
        ModelAdapter(cfg, runtime=runtime).load(tmp_path / "model")
    model.save(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / META_FILE).read_text())
    meta["vae_config"]["latent_dim"] += 1
    (tmp_path / "model" / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not fit"):
        ModelAdapter(cfg, runtime=runtime).load(tmp_path / "model")
    meta["vae_config"]["latent_dim"] -= 1
    meta["vae_config"]["decoder"] = "deep"
    (tmp_path / "model" / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"vae_config\.decoder = 'deep'"):
        ModelAdapter(cfg, runtime=runtime).load(tmp_path / "model")
    meta["format"] = 1  # an older layout: no standardisation buffers, no gaussian variance
    (tmp_path / "model" / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"format 1.*retrain"):
        ModelAdapter(cfg, runtime=runtime).load(tmp_path / "model")


def test_predict_before_fit_and_wrong_shape(cfg, runtime, data):
    model = ModelAdapter(cfg, runtime=runtime)
    with pytest.raises(RuntimeError, match="fit"):
        model.predict(np.zeros((2, 200), dtype=np.float32))
    model.fit(data)
    with pytest.raises(ValueError, match="shape"):
        model.predict(np.zeros((2, 5), dtype=np.float32))


def test_nan_input_is_refused(cfg, runtime, pre_adata):
    bad = pre_adata.copy()
    bad.X = bad.X.toarray()
    bad.X[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        DataAdapter(cfg, runtime=runtime, adata=bad)


def test_run_training_returns_metrics(cfg, runtime, pre_adata, tmp_path):
    path = tmp_path / "pre.h5ad"
    pre_adata.write_h5ad(path)
    result = run_training(cfg, data_path=path, model_dir=tmp_path / "m", runtime=runtime)
    assert result["epochs"] == runtime.epochs
    assert result["n_cells"] == pre_adata.n_obs
    assert np.isfinite(result["val_loss"])
    assert (tmp_path / "m" / WEIGHTS_FILE).exists()


def test_standardisation_matches_scanpy_scale(cfg, data, runtime, pre_adata):
    """The encoder sees the training data z-scored per gene and clipped at 10, as
    ``sc.pp.scale(max_value=10)`` computes it; the moments are the data's, not a default."""
    import scanpy as sc

    model = ModelAdapter(cfg, runtime=replace(runtime, epochs=1))
    model.fit(data)
    x = pre_adata.X.toarray()
    scaled = sc.pp.scale(pre_adata.copy(), max_value=10, copy=True).X
    ours = model.module.standardized(torch.from_numpy(x)).numpy()
    # scanpy divides by the unbiased sd; ours is the population sd (a factor sqrt(n / (n - 1)))
    n = x.shape[0]
    np.testing.assert_allclose(ours, np.clip(scaled * np.sqrt(n / (n - 1)), -10, 10), atol=2e-3)
    assert not torch.equal(model.module.gene_mean, torch.zeros_like(model.module.gene_mean))


@pytest.mark.parametrize(("decoder", "standardize"), [("linear", True), ("mlp", False)])
def test_decoders_train_and_reload(tmp_path, runtime, pre_adata, decoder, standardize):
    cfg = small_config(tmp_path, model={"decoder": decoder, "standardize": standardize})
    data = DataAdapter(cfg, runtime=runtime, adata=pre_adata)
    model = ModelAdapter(cfg, runtime=replace(runtime, epochs=4))
    history = model.fit(data)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert isinstance(model.module.decoder, torch.nn.Identity) == (decoder == "linear")
    model.save(tmp_path / "model")
    loaded = ModelAdapter(cfg, runtime=runtime).load(tmp_path / "model")
    assert loaded.module.cfg.decoder == decoder
    np.testing.assert_array_equal(
        model.predict(data.iter_all_batches()), loaded.predict(data.iter_all_batches())
    )


def test_gaussian_log_likelihood_matches_scipy(runtime):
    from scipy.stats import norm

    from src.app.core.model.nn import VAE, VAEConfig

    module = VAE(VAEConfig(n_genes=6, latent_dim=2, hidden_dims=(4,), dropout=0.0,
                           likelihood="gaussian", standardize=False))  # fmt: skip
    with torch.no_grad():
        module.log_var.copy_(torch.linspace(-8, 2, 6))  # the first is below the floor
    z, target = torch.randn(3, 2), torch.randn(3, 6)
    got = module.log_likelihood(z, target, torch.zeros(3, 1)).detach().numpy()
    mean = module.x_out(z).detach().numpy()
    sd = np.exp(0.5 * np.maximum(np.linspace(-8, 2, 6), -6.0))
    want = norm.logpdf(target.numpy(), mean, sd).sum(-1)
    np.testing.assert_allclose(got, want, rtol=1e-5)
