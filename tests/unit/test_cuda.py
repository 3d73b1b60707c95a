"""The GPU path: device selection from the machine profile, training with autocast on and off, a
checkpoint moved between the GPU and the CPU, the memory plan on the GPU, and an epoch that
never waits for the GPU. Every test is skipped without CUDA; the default run leaves them out
(marker ``cuda``): ``uv run pytest -q -n 0 -m cuda tests/unit/test_cuda.py`` (what
``bench/gpu_check.sh`` runs)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from src.app.core.data.row_store import DATA_MEMORY_SHARE, device_memory
from src.app.core.data_adapter import DataAdapter
from src.app.core.model.nn import VAE, VAEConfig
from src.app.core.model.optim import Adam
from src.app.core.model.runtime import runtime_for
from src.app.core.model.train_loop import batch_loss
from src.app.core.model_adapter import ModelAdapter
from src.app.machine import resolve_runtime
from tests.conftest import replace, small_config

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

# the same fp32 weights on two devices: cuBLAS and the CPU's BLAS sum in other orders, which
# moves a latent mean (of order 1) by about 1e-6; 1e-4 leaves room and still catches a wrong
# weight, buffer or standardisation (those move it by 1e-2 or more)
LATENT_ATOL = 1e-4
LATENT_RTOL = 1e-4
# two trainings on the same batches on the GPU, one from the matrix in VRAM and one streamed
# from the CPU: equal up to the GPU's summation order (other batches would differ by 0.1 or more)
TRAINED_ATOL = 1e-3
TINY_FRACTION = 1e-9  # of the VRAM for the data: a few bytes, so nothing fits


@pytest.fixture
def cuda_runtime(runtime):
    return replace(runtime, device="cuda", autocast=False)


def test_profile_with_gpu_memory_selects_cuda(tmp_path, cpu_profile):
    cfg = small_config(tmp_path, train={"batch_size": None})
    big = runtime_for(cfg, profile=replace(cpu_profile, gpu_vram_gb=80.0, batch_size=None))
    assert (big.device, big.batch_size, big.autocast) == ("cuda", 512, True)
    small = resolve_runtime(
        replace(cpu_profile, gpu_vram_gb=8.0, gpu_memory_fraction=0.5, batch_size=None),
        cfg.train,
        cuda_available=True,
    )
    assert (small.device, small.batch_size, small.autocast) == ("cuda", 256, False)
    none = resolve_runtime(replace(cpu_profile, gpu_vram_gb=0.0), cfg.train, cuda_available=True)
    assert (none.device, none.autocast) == ("cpu", False)


@pytest.mark.parametrize("likelihood", ["gaussian", "nb"])
@pytest.mark.parametrize("autocast", [False, True])
def test_training_on_cuda_gives_finite_losses(
    tmp_path, cuda_runtime, pre_adata, autocast, likelihood
):
    cfg = small_config(tmp_path, model={"likelihood": likelihood})
    data = DataAdapter(cfg, runtime=cuda_runtime, adata=pre_adata)
    model = ModelAdapter(cfg, runtime=replace(cuda_runtime, autocast=autocast))
    history = model.fit(data)
    keys = ("train_loss", "reconstruction", "kl", "classification", "val_loss")
    assert all(math.isfinite(row[key]) for row in history for key in keys), history
    assert all(p.is_cuda for p in model.module.parameters())
    latent = model.predict(data.iter_all_batches())
    assert latent.shape == (data.n_cells, cfg.model.latent_dim)
    assert np.isfinite(latent).all()


def test_checkpoint_moves_between_cuda_and_cpu(tmp_path, runtime, cuda_runtime, pre_adata):
    """Trained on the GPU, loaded on the CPU: the same latent and head within LATENT_ATOL; saved
    from the CPU and loaded on the GPU again: the same weights, bit for bit."""
    cfg = small_config(tmp_path)
    gpu_data = DataAdapter(cfg, runtime=cuda_runtime, adata=pre_adata)
    cpu_data = DataAdapter(cfg, runtime=runtime, adata=pre_adata)
    trained = ModelAdapter(cfg, runtime=cuda_runtime)
    trained.fit(gpu_data)
    latent, proba = trained.embed(gpu_data.iter_all_batches())
    trained.save(tmp_path / "from_gpu")
    on_cpu = ModelAdapter(cfg, runtime=runtime).load(tmp_path / "from_gpu")
    assert not any(t.is_cuda for t in on_cpu.module.state_dict().values())
    cpu_latent, cpu_proba = on_cpu.embed(cpu_data.iter_all_batches())
    np.testing.assert_allclose(cpu_latent, latent, atol=LATENT_ATOL, rtol=LATENT_RTOL)
    np.testing.assert_allclose(cpu_proba, proba, atol=LATENT_ATOL, rtol=LATENT_RTOL)
    on_cpu.save(tmp_path / "from_cpu")
    back = ModelAdapter(cfg, runtime=cuda_runtime).load(tmp_path / "from_cpu")
    first = trained.module.state_dict()
    for name, tensor in back.module.state_dict().items():
        assert tensor.is_cuda
        assert torch.equal(tensor.cpu(), first[name].cpu()), name
    again = back.predict(gpu_data.iter_all_batches())
    np.testing.assert_allclose(again, latent, atol=LATENT_ATOL, rtol=LATENT_RTOL)


def test_memory_plan_on_cuda_keeps_small_data_in_vram_and_streams_past_the_budget(
    tmp_path, cuda_runtime, pre_adata
):
    cfg = small_config(tmp_path, model={"likelihood": "nb"})
    dense = DataAdapter(cfg, runtime=cuda_runtime, adata=pre_adata)
    assert dense.layout == "dense"
    assert dense._store.matrix.is_cuda
    tiny = replace(cuda_runtime, gpu_memory_fraction=TINY_FRACTION)
    streamed = DataAdapter(cfg, runtime=tiny, adata=pre_adata)
    assert streamed.layout == "sparse"
    assert streamed.plan.dense_bytes > TINY_FRACTION * device_memory(tiny) * DATA_MEMORY_SHARE
    batch = next(streamed.iter_val_batches())
    assert all(t.is_cuda for t in (batch.x, batch.target, batch.library, batch.labels))
    latents = []
    for data, rt in ((dense, cuda_runtime), (streamed, tiny)):
        model = ModelAdapter(cfg, runtime=rt)
        model.fit(data)
        latents.append(model.predict(data.iter_all_batches()))
    np.testing.assert_allclose(latents[1], latents[0], atol=TRAINED_ATOL)


def test_disk_layout_trains_on_cuda(tmp_path, cuda_runtime, pre_adata):
    path = tmp_path / "pre.h5ad"
    pre_adata.write_h5ad(path)
    cfg = small_config(tmp_path)
    rt = replace(cuda_runtime, max_ram_gb=1e-6)  # not even the CSR fits: rows from the file
    data = DataAdapter(cfg, runtime=rt, path=path)
    assert data.layout == "disk"
    history = ModelAdapter(cfg, runtime=rt).fit(data)
    assert all(math.isfinite(row["train_loss"]) for row in history)


@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_training_epoch_never_waits_for_the_gpu(tmp_path, cuda_runtime, pre_adata, layout):
    """The batches and steps of an epoch (what ``train_vae`` runs per batch) queue their work
    without a host-device sync: CUDA's sync debug mode raises at the first one. The loop reads
    its loss once per epoch, after the batches."""
    cfg = small_config(tmp_path, model={"likelihood": "nb"})
    rt = cuda_runtime if layout == "dense" else replace(cuda_runtime, gpu_memory_fraction=1e-9)
    data = DataAdapter(cfg, runtime=rt, adata=pre_adata)
    assert data.layout == layout
    vae_cfg = VAEConfig(
        n_genes=data.n_genes,
        latent_dim=4,
        hidden_dims=(32,),
        dropout=0.1,
        likelihood="nb",
        n_labels=len(data.label_categories),
    )
    module = VAE(vae_cfg).to("cuda")
    opt = Adam(module.parameters(), lr=1e-3)

    def epoch() -> torch.Tensor:
        sums = torch.zeros(4, device="cuda")
        for batch in data.iter_train_batches():
            terms = batch_loss(module, batch, cfg, kl=1.0)
            opt.zero_grad()
            terms.loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 10.0)
            opt.step()
            parts = torch.stack([terms.loss, terms.reconstruction, terms.kl, terms.classification])
            sums += parts.detach() * batch.n_cells
        return sums

    epoch()  # the first calls initialise cuBLAS and the pinned-memory pool
    torch.cuda.set_sync_debug_mode("error")
    try:
        sums = epoch()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(sums).all()
