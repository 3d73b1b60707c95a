"""Memory: the plan made before densifying, and the three places the matrix can live giving the
same training (``dense`` and ``sparse`` bit-identical, ``disk`` within a tolerance), with the
embed stage streaming its output."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from src.app.core.data.h5ad import StoredMatrix
from src.app.core.data.row_store import DATA_MEMORY_SHARE, GIB, plan_memory
from src.app.core.data_adapter import DataAdapter
from src.app.core.model.embed import run_embedding
from src.app.core.model_adapter import ModelAdapter
from tests.conftest import replace, small_config

MB = 1 << 20


@pytest.mark.parametrize(
    ("cells", "nnz", "machine", "layout"),
    [
        (10_000, 2_000_000, (6.0, "cpu", 0), "dense"),  # 76 MB dense
        (1_000_000, 200_000_000, (6.0, "cpu", 0), "sparse"),  # 7.5 GB dense, 1.5 GB CSR
        (1_000_000, 200_000_000, (64.0, "cpu", 0), "dense"),
        (5_000_000, 1_000_000_000, (6.0, "cpu", 0), "disk"),  # 7.5 GB CSR
        (1_000_000, 200_000_000, (64.0, "cuda", 8 * GIB), "sparse"),  # dense over the GPU's share
        (1_000_000, 200_000_000, (64.0, "cuda", 80 * GIB), "dense"),
    ],
)
def test_plan_keeps_the_matrix_within_the_budget(runtime, cells, nnz, machine, layout):
    """2,000 genes; ``machine``: max_ram_usage_gb, device and its memory."""
    ram_gb, device, vram = machine
    rt = replace(runtime, max_ram_gb=ram_gb, device=device, gpu_memory_fraction=0.9)
    plan = plan_memory(n_cells=cells, n_genes=2000, nnz=nnz, runtime=rt, vram_bytes=vram)
    assert plan.layout == layout
    assert plan.dense_bytes == cells * 2000 * 4
    assert plan.budget_bytes == int(ram_gb * GIB * DATA_MEMORY_SHARE)


@pytest.mark.parametrize("likelihood", ["gaussian", "nb"])
def test_streamed_training_matches_in_memory(tmp_path, runtime, pre_adata, likelihood, monkeypatch):
    path = tmp_path / "pre.h5ad"
    pre_adata.write_h5ad(path, compression="gzip")
    cfg = small_config(tmp_path, model={"likelihood": likelihood})
    plan = DataAdapter(cfg, runtime=runtime, path=path).plan
    # RAM budgets that leave room for: the dense matrix and its CSR; the CSR only; neither
    ram = {
        "dense": 4.0,
        "sparse": (plan.sparse_bytes + plan.dense_bytes // 2) / DATA_MEMORY_SHARE / GIB,
        "disk": plan.sparse_bytes / 8 / DATA_MEMORY_SHARE / GIB,
    }

    def whole_matrix_read(self):
        raise AssertionError("the disk layout read the whole matrix")

    results = {}
    for layout, ram_gb in ram.items():
        rt = replace(runtime, max_ram_gb=ram_gb)
        with monkeypatch.context() as patch:
            if layout == "disk":
                patch.setattr(StoredMatrix, "read", whole_matrix_read)
            data = DataAdapter(cfg, runtime=rt, path=path)
            assert data.layout == layout
            model = ModelAdapter(cfg, runtime=rt)
            history = model.fit(data)
            results[layout] = (history[-1]["val_loss"], model.predict(data.iter_all_batches()))
    np.testing.assert_array_equal(results["dense"][1], results["sparse"][1])
    assert results["dense"][0] == results["sparse"][0]
    # another batch order: the same fit to within a few per cent
    assert results["disk"][0] == pytest.approx(results["dense"][0], rel=0.02)

    # embed streams too, into a file of the cells alone (no genes, no matrices)
    model.save(tmp_path / "model")
    out = tmp_path / "embedded.h5ad"
    z = run_embedding(cfg, model_dir=tmp_path / "model", data_path=path, latent_out=tmp_path / "z.npy", h5ad_out=out, runtime=rt)  # fmt: skip
    np.testing.assert_array_equal(z, results["disk"][1])
    with h5py.File(out) as f, h5py.File(path) as g:
        np.testing.assert_array_equal(f["obsm/X_vae"][()], z)
        assert "X" not in f
        assert len(f.get("layers", ())) == 0
        assert list(f["obs/_index"].asstr()) == list(g["obs/_index"].asstr())
        assert "predicted_cell_type_coarse" in f["obs"]
