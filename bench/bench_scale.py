"""Scale: one epoch of training and the embed stage at 10k, 100k and 1M cells x 2,000 genes.

The parent writes synthetic sparse counts to disk in chunks (never the whole matrix in memory), as
the preprocess stage would leave them: an h5ad with the log-normalised values in a CSR ``.X``, the
raw counts in a CSR ``.layers["counts"]``, a train/val split and labels. Each size then runs in
its own child process (so peak RSS is per size) under a machine profile with ``--ram-gb`` of
``max_ram_usage_gb``, which decides whether the matrix is kept dense, as CSR in RAM or in its file
(the memory plan of ``src/app/core/row_store.py``). The parent prints one table (seconds to load,
train one epoch and embed, seconds per 1k cells, peak RSS) and writes the rows to ``--out``.

    .venv/bin/python bench/bench_scale.py [--sizes 10000 100000 1000000] [--ram-gb 6]
        [--genes 2000] [--density 0.1] [--workdir results/bench/scale] [--out ...]

The generated files are cached in ``--workdir`` (about 0.9 GB for 1M cells with gzip).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._child import peak_rss_mb  # noqa: E402 (after the path above)

DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
CHUNK_CELLS = 10_000
N_TYPES = 6
RESULT_PREFIX = '{"n_cells"'


# --- data: written to disk in chunks ----------------------------------------------------------


def _append(group: Any, name: str, values: np.ndarray, compression: str | None) -> None:
    """Append ``values`` to the resizable 1-D dataset ``group[name]`` (created on first use)."""
    if name not in group:
        group.create_dataset(
            name, data=values, maxshape=(None,), chunks=(1 << 16,), compression=compression
        )
        return
    dset = group[name]
    start = dset.shape[0]
    dset.resize((start + len(values),))
    dset[start:] = values


def _csr_group(f: Any, path: str, shape: tuple[int, int]) -> Any:
    group = f.require_group(path)
    group.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0"})
    group.attrs["shape"] = np.array(shape)
    return group


def write_synthetic(
    path: Path, *, n_cells: int, n_genes: int, density: float, compression: str | None, seed: int
) -> None:
    """Poisson counts of ``N_TYPES`` cell types (marker genes, varying library sizes) with about
    ``density`` of the entries non-zero, written ``CHUNK_CELLS`` cells at a time."""
    import anndata as ad
    import h5py
    import pandas as pd

    rng = np.random.default_rng(seed)
    # per type a gene profile with mean rate giving the wanted density: P(x > 0) = 1 - exp(-mu)
    base = rng.lognormal(0.0, 1.0, n_genes)
    base *= -np.log1p(-density) / base.mean()
    profiles = np.tile(base, (N_TYPES, 1))
    for t in range(N_TYPES):
        markers = rng.choice(n_genes, size=n_genes // 50, replace=False)
        profiles[t, markers] *= 8.0
    cell_type = rng.integers(0, N_TYPES, n_cells)
    tmp = path.with_suffix(".part")
    with h5py.File(tmp, "w") as f:
        f.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
        x = _csr_group(f, "X", (n_cells, n_genes))
        ad.io.write_elem(f, "layers", {})
        counts = _csr_group(f, "layers/counts", (n_cells, n_genes))
        offset = 0
        for group in (x, counts):
            _append(group, "indptr", np.zeros(1, dtype=np.int64), None)
        for start in range(0, n_cells, CHUNK_CELLS):
            types = cell_type[start : start + CHUNK_CELLS]
            size = rng.lognormal(0.0, 0.3, (len(types), 1))
            chunk = rng.poisson(profiles[types] * size).astype(np.float32)
            chunk[chunk.sum(1) == 0, 0] = 1.0  # every cell has counts, as after QC
            rows, cols = np.nonzero(chunk)
            values = chunk[rows, cols]
            total = chunk.sum(1)
            logn = np.log1p(values / total[rows] * 1e4).astype(np.float32)
            indptr = offset + np.cumsum(np.bincount(rows, minlength=len(types)))
            offset = int(indptr[-1])
            for group, data in ((x, logn), (counts, values)):
                _append(group, "data", data, compression)
                _append(group, "indices", cols.astype(np.int32), compression)
                _append(group, "indptr", indptr.astype(np.int64), None)
        names = np.array([f"CELL{i:07d}" for i in range(n_cells)], dtype=object)
        split = np.where(rng.random(n_cells) < 0.1, "val", "train")
        labels = np.array([f"type{t}" for t in range(N_TYPES)], dtype=object)[cell_type]
        labels[rng.random(n_cells) < 0.1] = np.nan  # unlabelled cells
        obs = pd.DataFrame(
            {
                "split": pd.Categorical(split),
                "cell_type_coarse": pd.Categorical(labels),
            },
            index=pd.Index(names, dtype=object),
        )
        genes = pd.DataFrame(index=pd.Index([f"GENE{i:05d}" for i in range(n_genes)], dtype=object))
        ad.io.write_elem(f, "obs", obs)
        ad.io.write_elem(f, "var", genes)
        for name in ("obsm", "varm", "obsp", "varp", "uns"):
            ad.io.write_elem(f, name, {})
    tmp.replace(path)


# --- one size, in a child process -------------------------------------------------------------


def child(path: Path, *, ram_gb: float, threads: int, batch_size: int, workdir: Path) -> None:
    """Train one epoch on ``path`` and run the embed stage; print one JSON line."""
    import gc

    import torch

    from src.app.config import config_from_dict
    from src.app.core.data_adapter import DataAdapter
    from src.app.core.model.embed import run_embedding
    from src.app.core.model_adapter import ModelAdapter
    from src.app.machine import Runtime

    torch.set_num_threads(threads)
    cfg = config_from_dict({"data": {"labels": None}, "train": {"epochs": 1}})
    runtime = Runtime(
        device="cpu",
        threads=threads,
        loader_workers=1,
        batch_size=batch_size,
        lr=1e-3,
        epochs=1,
        autocast=False,
        max_ram_gb=ram_gb,
        gpu_memory_fraction=0.9,
    )
    start = time.perf_counter()
    data = DataAdapter(cfg, runtime=runtime, path=path)
    loaded = time.perf_counter()
    model = ModelAdapter(cfg, runtime=runtime)
    history = model.fit(data)
    trained = time.perf_counter()
    layout, n_cells = data.layout, data.n_cells
    model_dir = workdir / f"model_{n_cells}"
    model.save(model_dir)
    del data, model
    gc.collect()
    latent = run_embedding(
        cfg,
        model_dir=model_dir,
        data_path=path,
        latent_out=workdir / f"latent_{n_cells}.npy",
        h5ad_out=workdir / f"embedded_{n_cells}.h5ad",
        runtime=runtime,
    )
    embedded = time.perf_counter()
    (workdir / f"embedded_{n_cells}.h5ad").unlink()
    row = {
        "n_cells": n_cells,
        "layout": layout,
        "load_s": loaded - start,
        "train_epoch_s": trained - loaded,
        "embed_s": embedded - trained,
        "total_s": embedded - start,
        "peak_rss_mb": peak_rss_mb(),
        "train_loss": history[-1]["train_loss"],
        "latent_finite": bool(np.isfinite(latent).all()),
    }
    print(json.dumps(row), flush=True)


# --- parent -----------------------------------------------------------------------------------


def machine_threads() -> int:
    """``annotation_threads`` of config.yml (of its template when the machine has none yet)."""
    from src.app.machine import load_machine_profile

    path = ROOT / "config.yml"
    return load_machine_profile(
        path if path.exists() else ROOT / "config.yml.example"
    ).annotation_threads


def run_size(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", str(path), "--ram-gb", str(args.ram_gb)]
    cmd += ["--threads", str(args.threads), "--batch-size", str(args.batch_size)]
    cmd += ["--workdir", str(args.workdir)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONHASHSEED": "0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    rows = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not rows:
        sys.exit(f"size {path.name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(rows[-1])


def print_table(rows: list[dict[str, Any]], ram_gb: float) -> None:
    print(f"\nmax_ram_usage_gb {ram_gb}; one epoch of training, then the embed stage")
    head = ("cells", "layout", "load s", "train s", "embed s", "total s", "s/1k cells", "peak RSS")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        per_k = row["total_s"] / row["n_cells"] * 1000
        cells = (
            row["n_cells"],
            row["layout"],
            f"{row['load_s']:.1f}",
            f"{row['train_epoch_s']:.1f}",
            f"{row['embed_s']:.1f}",
            f"{row['total_s']:.1f}",
            f"{per_k:.3f}",
            f"{row['peak_rss_mb'] / 1024:.2f} GB",
        )
        print("| " + " | ".join(f"{c:,}" if isinstance(c, int) else c for c in cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--density", type=float, default=0.1, help="share of non-zero counts")
    parser.add_argument("--ram-gb", type=float, default=6.0, help="max_ram_usage_gb")
    parser.add_argument(
        "--threads", type=int, help="torch threads (default: annotation_threads of config.yml)"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--compression", default="gzip", choices=["gzip", "lzf", "none"])
    parser.add_argument("--workdir", type=Path, default=Path("results/bench/scale"))
    parser.add_argument("--out", type=Path, default=Path("results/bench/scale.json"))
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(
            args.child,
            ram_gb=args.ram_gb,
            threads=args.threads,
            batch_size=args.batch_size,
            workdir=args.workdir,
        )
        return
    if args.threads is None:
        args.threads = machine_threads()
    args.workdir.mkdir(parents=True, exist_ok=True)
    compression = None if args.compression == "none" else args.compression
    rows = []
    for n_cells in args.sizes:
        path = args.workdir / f"cells_{n_cells}_{args.genes}_{args.density}_{args.compression}.h5ad"
        if not path.exists():
            start = time.perf_counter()
            write_synthetic(
                path,
                n_cells=n_cells,
                n_genes=args.genes,
                density=args.density,
                compression=compression,
                seed=n_cells,
            )
            print(f"wrote {path} in {time.perf_counter() - start:.0f} s", flush=True)
        row = run_size(path, args)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print_table(rows, args.ram_gb)
    from src.app.io_utils import write_json

    write_json(args.out, {"ram_gb": args.ram_gb, "genes": args.genes, "rows": rows})


if __name__ == "__main__":
    main()
