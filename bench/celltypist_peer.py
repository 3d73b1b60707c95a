"""CellTypist peer of the mapping benchmark, run in its own environment by ``bench/mapping_peers.py``.

Reads ``ref.h5ad`` (raw counts, the label column) and ``query.h5ad`` (raw counts) from
``--workdir``, normalises each to 1e4 counts + log1p (what CellTypist expects), trains
``celltypist.train`` on all reference genes and annotates the query (best match, and probability
match at p_thres 0.5; majority_voting off). Writes ``pred.json`` to the same folder.

Options are CellTypist 1.7.1's defaults: logistic regression (lbfgs, C 1.0, max_iter by data size,
one-vs-rest), with_mean scaling, feature_selection off, no mini-batch, no SGD, no GPU; n_jobs is
--threads. At annotation CellTypist itself keeps the model genes that the query has.

    python bench/celltypist_peer.py --workdir DIR --label-key KEY [--threads 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import resource
import time
from pathlib import Path

import numpy as np


def log_norm(adata):
    import scanpy as sc

    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    return adata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--label-key", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import anndata as ad
    import celltypist

    # lbfgs logistic regression is deterministic; the seed covers anything numpy-random
    np.random.seed(args.seed)  # noqa: NPY002
    ref = ad.read_h5ad(args.workdir / "ref.h5ad")
    query = ad.read_h5ad(args.workdir / "query.h5ad")
    start = time.perf_counter()
    ref, query = log_norm(ref), log_norm(query)
    model = celltypist.train(ref, labels=args.label_key, n_jobs=args.threads)
    best = celltypist.annotate(query, model=model, mode="best match", majority_voting=False)
    prob = celltypist.annotate(
        query, model=model, mode="prob match", p_thres=0.5, majority_voting=False
    )
    seconds = time.perf_counter() - start
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on linux
    versions = {p: importlib.metadata.version(p) for p in ("celltypist", "scikit-learn", "scanpy")}
    out = {
        "obs_names": list(map(str, query.obs_names)),
        "best": best.predicted_labels["predicted_labels"].astype(str).tolist(),
        "prob": prob.predicted_labels["predicted_labels"].astype(str).tolist(),
        "seconds": seconds,
        "peak_rss_mb": rss_kb / 1024,
        "n_genes": int(model.classifier.n_features_in_),
        "versions": versions,
    }
    (args.workdir / "pred.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main()
