"""Annotation quality against training epochs, on PBMC 3k and the panel, over several seeds.

For each data set the raw counts are preprocessed once with the default config (its label columns
from ``.obs``); then for each epoch count and seed the default model trains (the classifier head
on the first label key) and prints one row: seconds to a trained model, kNN (k=15) 5-fold macro F1
on each label key and the head's macro F1 on the cells whose label it did not see. The last lines
give each epoch count's mean and SD over the seeds, per data set.

    .venv/bin/python bench/bench_epochs.py [--epochs 100 60] [--seeds 0 1 2] [--sets pbmc3k ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
# name -> (raw counts, label keys: the first one is the head's)
SETS = {
    "pbmc3k": (DATA / "pbmc3k" / "pbmc3k_raw.h5ad", ("cell_type_coarse", "cell_type")),
    "zheng_facs": (DATA / "panel" / "zheng_facs.h5ad", ("label_coarse", "label")),
    "kang": (DATA / "panel" / "kang_ifnb_muscat.h5ad", ("label",)),
}


def prepared(name: str, cfg):
    """The preprocessed AnnData of data set ``name`` and the config for it."""
    import anndata as ad

    from src.app.core.data.preprocess import preprocess

    path, keys = SETS[name]
    raw = ad.read_h5ad(path)
    cfg = dataclasses.replace(
        cfg,
        eval=dataclasses.replace(cfg.eval, label_keys=keys),
        annotation=dataclasses.replace(cfg.annotation, label_key=keys[0]),
    )
    return preprocess(raw, cfg.preprocess, seed=cfg.seed), cfg


def one_run(adata, cfg, *, epochs: int, seed: int) -> dict:
    import torch

    from src.app.core.data_adapter import DataAdapter
    from src.app.core.eval import evaluate_joint, evaluate_latent
    from src.app.core.model_adapter import ModelAdapter
    from src.app.machine import load_machine_profile, resolve_runtime

    cfg = dataclasses.replace(cfg, seed=seed, train=dataclasses.replace(cfg.train, epochs=epochs))
    profile = load_machine_profile(ROOT / "config.yml")
    runtime = resolve_runtime(profile, cfg.train, cuda_available=torch.cuda.is_available())
    torch.set_num_threads(runtime.threads)
    data = DataAdapter(cfg, runtime=runtime, adata=adata)
    model = ModelAdapter(cfg, runtime=runtime)
    start = time.perf_counter()
    model.fit(data)
    seconds = time.perf_counter() - start
    latent, proba = model.embed(data.iter_all_batches())
    scores = evaluate_latent(latent, adata.obs, cfg.eval, seed=seed)
    key = cfg.annotation.label_key
    head = evaluate_joint(adata.obs[key], proba, model.label_categories, visible=data.label_visible)
    row = {k: scores["labels"][k]["knn"]["f1_macro"] for k in cfg.eval.label_keys}
    return {"seconds": seconds, **row, "head": head["f1_macro"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[100, 60])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    args = parser.parse_args(argv)
    from src.app.config import load_config

    base = load_config(ROOT / "config" / "default.yaml")
    summary = []
    for name in args.sets:
        adata, cfg = prepared(name, base)
        for epochs in args.epochs:
            rows = []
            for seed in args.seeds:
                rows.append(one_run(adata, cfg, epochs=epochs, seed=seed))
                print(name, epochs, seed, {k: round(v, 3) for k, v in rows[-1].items()}, flush=True)
            stats = {
                k: (statistics.fmean(r[k] for r in rows), statistics.pstdev(r[k] for r in rows))
                for k in rows[0]
            }
            summary.append((name, epochs, stats))
    for name, epochs, stats in summary:
        print(name, epochs, "  ".join(f"{k} {m:.3f}+-{s:.3f}" for k, (m, s) in stats.items()))


if __name__ == "__main__":
    main()
