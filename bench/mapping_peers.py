"""Peer tools of the reference -> query mapping benchmark (used by ``bench/bench_mapping.py``).

Each peer is trained on the labelled reference only and predicts one label per query cell:

- ``pca_knn``: scanpy ingest's route by hand (shared genes, log1p of 1e4-normalised counts, seurat
  HVGs, scaling and a 50-PC PCA fitted on the reference, kNN k=15 majority vote);
- ``celltypist`` / ``celltypist_prob``: CellTypist 1.7.1 best match / probability match (p 0.5),
  run by ``bench/celltypist_peer.py`` in an isolated uv environment (its scikit-learn pin);
- ``scanvi_scarches``: scvi-tools SCVI -> SCANVI on the reference, scArches on the query.

Results are cached as JSON under ``cache_dir`` (one file per peer, seed and input hash).

    uv run python bench/mapping_peers.py [--peers pca_knn ...] [--seed 0] [--threads 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from anndata import AnnData

ROOT = Path(__file__).resolve().parents[1]
PEERS = ("celltypist", "celltypist_prob", "pca_knn", "scanvi_scarches")
UNKNOWN = "unknown"
CELLTYPIST_SCRIPT = ROOT / "bench" / "celltypist_peer.py"
# celltypist 1.7.1 passes LogisticRegression(multi_class=...), removed in scikit-learn 1.8
CELLTYPIST_ENV = ("celltypist==1.7.1", "scikit-learn==1.5.2")
CELLTYPIST_PYTHON = "3.11"
# scvi's default epochs for 2,638 cells are 400 (SCVI) and 10 (SCANVI after SCVI); the scArches
# tutorial trains the query for 100; caps keep the peer well under 15 min on 2 cores
SCVI_MAX_EPOCHS = 400
SCANVI_MAX_EPOCHS = 10
QUERY_MAX_EPOCHS = 100
PCA_KNN = {"n_top_genes": 2000, "n_pcs": 50, "k": 15, "clip": 10.0}
BATCH_COL = "_peer_batch"


def run_peer(
    name: str,
    ref: AnnData,
    query: AnnData,
    *,
    label_key: str,
    query_batch_key: str | None,
    seed: int,
    threads: int,
    cache_dir: Path,
) -> dict:
    """Train peer ``name`` on ``ref``, predict ``query``: {"pred", "seconds", "peak_rss_mb", ...}.

    ``pred`` holds one label per query cell in query order ('unknown' where the tool leaves the
    cell unassigned); ``seconds`` is the wall time of training + prediction.
    """
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}, expected one of {PEERS}")
    cache_dir = Path(cache_dir)
    key = input_key(name, ref, query, label_key=label_key, query_batch_key=query_batch_key)
    path = cache_dir / f"{name}_seed{seed}_{key[:16]}.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return {**cached, "cached": True}
    if name.startswith("celltypist"):
        results = _celltypist(ref, query, label_key=label_key, seed=seed, threads=threads)
    else:
        fit = _pca_knn if name == "pca_knn" else _scanvi_scarches
        opts = {"label_key": label_key, "query_batch_key": query_batch_key, "seed": seed}
        results = {name: _measured(fit, ref, query, **opts, threads=threads)}
    cache_dir.mkdir(parents=True, exist_ok=True)
    for peer, result in results.items():
        # celltypist's one run gives both of its peers
        peer_key = input_key(peer, ref, query, label_key=label_key, query_batch_key=query_batch_key)
        out = cache_dir / f"{peer}_seed{seed}_{peer_key[:16]}.json"
        out.write_text(json.dumps({**result, "key": peer_key}))
    return {**results[name], "key": key, "cached": False}


def input_key(
    name: str, ref: AnnData, query: AnnData, *, label_key: str, query_batch_key: str | None
) -> str:
    """Hash of the inputs a peer's result depends on, and of the peer's own settings."""
    settings = {
        "pca_knn": PCA_KNN,
        "scanvi_scarches": [SCVI_MAX_EPOCHS, SCANVI_MAX_EPOCHS, QUERY_MAX_EPOCHS, query_batch_key],
    }.get(name, list(CELLTYPIST_ENV))
    h = hashlib.sha256(json.dumps([name, settings]).encode())
    parts = [ref.obs_names, ref.obs[label_key].astype(str), query.obs_names, ref.var_names]
    parts.append(query.var_names)
    if name == "scanvi_scarches" and query_batch_key is not None:
        parts.append(query.obs[query_batch_key].astype(str))
    for part in parts:
        h.update("\x1f".join(map(str, part)).encode())
        h.update(b"\x1e")
    return h.hexdigest()


def _measured(fit, ref: AnnData, query: AnnData, **opts: Any) -> dict[str, Any]:
    """Run an in-process peer; peak RSS is the process's high-water mark during the run."""
    reset = _reset_peak_rss()
    start = time.perf_counter()
    pred, extra = fit(ref, query, **opts)
    seconds = time.perf_counter() - start
    peak = _peak_rss_mb() if reset else None
    return {"pred": [str(p) for p in pred], "seconds": seconds, "peak_rss_mb": peak, **extra}


def _reset_peak_rss() -> bool:
    try:
        # linux: writing 5 resets VmHWM, the peak RSS, to the current RSS (ru_maxrss follows it)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss_mb() -> float | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def _shared_genes(ref: AnnData, query: AnnData):
    return ref.var_names[ref.var_names.isin(query.var_names)]


def _log_norm(adata: AnnData) -> np.ndarray:
    import scanpy as sc

    adata = adata.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    x = adata.X
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)


def _pca_knn(ref, query, *, label_key, query_batch_key, seed, threads):  # noqa: ARG001
    import anndata as ad
    import scanpy as sc
    from sklearn.decomposition import PCA
    from sklearn.neighbors import KNeighborsClassifier
    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads):
        genes = _shared_genes(ref, query)
        x_ref, x_query = _log_norm(ref[:, genes]), _log_norm(query[:, genes])
        n_top = min(PCA_KNN["n_top_genes"], len(genes))
        hvg = sc.pp.highly_variable_genes(
            ad.AnnData(x_ref), flavor="seurat", n_top_genes=n_top, inplace=False
        )["highly_variable"].to_numpy()
        x_ref, x_query = x_ref[:, hvg], x_query[:, hvg]
        # scanpy's scale: unbiased sd, zero sd -> 1, clipped at +-10; the query uses the ref's
        mean, sd = x_ref.mean(axis=0), x_ref.std(axis=0, ddof=1)
        sd[sd == 0] = 1.0
        clip = PCA_KNN["clip"]
        z_ref = np.clip((x_ref - mean) / sd, -clip, clip)
        z_query = np.clip((x_query - mean) / sd, -clip, clip)
        n_pcs = min(PCA_KNN["n_pcs"], z_ref.shape[1] - 1)
        pca = PCA(n_components=n_pcs, svd_solver="arpack", random_state=seed).fit(z_ref)
        knn = KNeighborsClassifier(n_neighbors=PCA_KNN["k"])
        knn.fit(pca.transform(z_ref), ref.obs[label_key].astype(str).to_numpy())
        pred = knn.predict(pca.transform(z_query))
    return pred, {"n_genes": len(genes), "n_hvg": int(hvg.sum())}


def _scanvi_scarches(ref, query, *, label_key, query_batch_key, seed, threads):
    import scvi
    import torch
    from scvi.model._utils import get_max_epochs_heuristic

    scvi.settings.seed = seed
    torch.set_num_threads(threads)
    genes = _shared_genes(ref, query)
    ref = ref[:, genes].copy()
    ref.obs = ref.obs[[label_key]].astype(str).assign(**{BATCH_COL: "reference"})
    query = query.copy()
    batches = "query" if query_batch_key is None else query.obs[query_batch_key].astype(str)
    query.obs = query.obs[[]].assign(**{BATCH_COL: batches, label_key: "Unknown"})
    fit = {"accelerator": "cpu", "enable_progress_bar": False}

    scvi.model.SCVI.setup_anndata(ref, batch_key=BATCH_COL, labels_key=label_key)
    vae = scvi.model.SCVI(ref)
    epochs_ref = min(SCVI_MAX_EPOCHS, get_max_epochs_heuristic(ref.n_obs))
    vae.train(max_epochs=epochs_ref, **fit)
    scanvi = scvi.model.SCANVI.from_scvi_model(vae, unlabeled_category="Unknown")
    scanvi.train(max_epochs=SCANVI_MAX_EPOCHS, **fit)

    scvi.model.SCANVI.prepare_query_anndata(query, scanvi)
    scanvi_query = scvi.model.SCANVI.load_query_data(query, scanvi, accelerator="cpu")
    scanvi_query.train(max_epochs=QUERY_MAX_EPOCHS, plan_kwargs={"weight_decay": 0.0}, **fit)
    pred = [UNKNOWN if p == "Unknown" else p for p in scanvi_query.predict()]
    extra = {"epochs_ref": epochs_ref, "epochs_scanvi": SCANVI_MAX_EPOCHS}
    return pred, {**extra, "epochs_query": QUERY_MAX_EPOCHS, "n_genes": len(genes)}


def celltypist_command(workdir: Path, label_key: str, threads: int, seed: int) -> list[str]:
    """The isolated-env command that runs ``bench/celltypist_peer.py`` on files in ``workdir``."""
    uv = shutil.which("uv")
    if uv is None:
        raise RuntimeError("celltypist peer needs uv on PATH to build its isolated environment")
    cmd = [uv, "run", "--no-project", "--python", CELLTYPIST_PYTHON]
    for req in CELLTYPIST_ENV:
        cmd += ["--with", req]
    cmd += ["python", str(CELLTYPIST_SCRIPT), "--workdir", str(workdir)]
    return [*cmd, "--label-key", label_key, "--threads", str(threads), "--seed", str(seed)]


def _celltypist(ref, query, *, label_key: str, seed: int, threads: int) -> dict[str, dict]:
    import anndata as ad

    with tempfile.TemporaryDirectory(prefix="celltypist_peer_") as tmp:
        workdir = Path(tmp)
        # raw counts only: the child normalises, trains and annotates
        ad.AnnData(ref.X, obs=ref.obs[[label_key]].astype(str), var=ref.var[[]]).write_h5ad(
            workdir / "ref.h5ad"
        )
        ad.AnnData(query.X, obs=query.obs[[]], var=query.var[[]]).write_h5ad(workdir / "query.h5ad")
        cmd = celltypist_command(workdir, label_key, threads, seed)
        env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
        env |= {
            v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
        }
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(
                f"celltypist peer failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                f"{proc.stderr[-3000:]}"
            )
        out = json.loads((workdir / "pred.json").read_text())
    if out["obs_names"] != list(map(str, query.obs_names)):
        raise RuntimeError("celltypist peer returned cells in another order than the query")
    common = {k: out[k] for k in ("seconds", "peak_rss_mb", "n_genes", "versions")}
    common["seconds_subprocess"] = wall
    best = {"pred": out["best"], **common}
    prob = [UNKNOWN if p == "Unassigned" or "|" in p else p for p in out["prob"]]
    return {"celltypist": best, "celltypist_prob": {"pred": prob, **common}}


def _load_inputs(label_key: str = "cell_type_coarse") -> tuple[AnnData, AnnData]:
    import anndata as ad

    shared = ROOT.parent / "shared" / "data"
    ref = ad.read_h5ad(shared / "pbmc3k" / "pbmc3k_raw.h5ad")
    ref = ref[ref.obs[label_key].notna()].copy()
    query = ad.read_h5ad(shared / "panel" / "kang_ifnb_muscat.h5ad")
    return ref, query


def main() -> None:
    from sklearn.metrics import accuracy_score, f1_score

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", nargs="+", default=list(PEERS), choices=PEERS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--cache-dir", type=Path, default=ROOT / "results" / "bench_mapping" / "peers"
    )
    args = parser.parse_args()
    ref, query = _load_inputs()
    truth = query.obs["label"].astype(str).to_numpy()
    labels = sorted(set(truth))
    print("| peer | macro F1 | accuracy | unknown % | seconds | peak RSS MB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in args.peers:
        res = run_peer(
            name, ref, query, label_key="cell_type_coarse", query_batch_key="batch",
            seed=args.seed, threads=args.threads, cache_dir=args.cache_dir,
        )  # fmt: skip
        pred = np.asarray(res["pred"])
        f1 = f1_score(truth, pred, labels=labels, average="macro", zero_division=0)
        unknown = 100 * np.mean(pred == UNKNOWN)
        rss = "-" if res["peak_rss_mb"] is None else f"{res['peak_rss_mb']:.0f}"
        print(
            f"| {name} | {f1:.3f} | {accuracy_score(truth, pred):.3f} | {unknown:.1f} "
            f"| {res['seconds']:.1f} | {rss} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
