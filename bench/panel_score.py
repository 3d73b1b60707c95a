"""bench_panel's scores of a latent: kNN and logistic-regression k-fold macro F1 per label key
and, on batch sets, the scIB aggregates and the cross-batch transfer macro F1
(``src.app.core.evaluate.batch``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.panel_sets import SETS, set_config


def label_scores(latent: np.ndarray, obs: Any, cfg: Any, seed: int) -> dict[str, dict]:
    """kNN and logistic-regression k-fold macro F1 per label key (the evaluate stage's code)."""
    from threadpoolctl import threadpool_limits

    from src.app.core.evaluate.classify import METHODS as EVAL_METHODS
    from src.app.core.evaluate.representation import cross_validated, labelled

    out = {}
    with threadpool_limits(limits=1):  # hundreds of small fits: one thread is fastest
        for key in cfg.eval.label_keys:
            entry = cross_validated(latent, *labelled(obs, key), cfg.eval, seed=seed)
            out[key] = {m: entry[m]["f1_macro"] for m in EVAL_METHODS}
    return out


def batch_module() -> Any:
    """``src.app.core.evaluate.batch`` when it exists (written by another engineer), else None."""
    try:
        from src.app.core.evaluate import batch
    except ImportError:
        return None
    return batch


def score_seed(name: str, seed: int, obs: Any, latents: dict, notes: set[str]) -> dict:
    """Every score of every method's latent of one (set, seed), by method."""
    cfg = set_config(name, seed, None)
    scores = {}
    for method, (latent, record) in latents.items():
        scores[method] = {"f1": label_scores(latent, obs, cfg, seed), "record": record}
    panel = SETS[name]
    if panel.transfer is not None and not hasattr(cfg.eval, "transfer_key"):
        notes.add("eval.transfer_key does not exist yet: ours' head saw labels in every batch")
    if panel.batch_key is None:
        return scores
    batch = batch_module()
    if batch is None:
        notes.add(
            "src.app.core.evaluate.batch does not exist yet: scIB and transfer columns left out"
        )
        return scores
    add_batch_scores(scores, batch, name, latents=latents, obs=obs, seed=seed, notes=notes)
    return scores


def add_batch_scores(
    scores: dict, batch: Any, name: str, *, latents: dict, obs: Any, seed: int, notes: set[str]
) -> None:
    """The scIB aggregates and the cross-batch transfer macro F1 of each method, per label key:
    ``batch_metrics`` with the unintegrated PCA as ``pre_integrated``, ``cross_batch_transfer``
    fitted on the set's reference cells."""
    panel = SETS[name]
    embeddings = {method: latent for method, (latent, _) in latents.items()}
    pre = embeddings.get("pca")
    if pre is None:
        notes.add("scIB without the pca latent (method pca): pcr_comparison left out")
    batches = obs[panel.batch_key].to_numpy()
    for key in panel.label_keys:
        labels = obs[key].astype("object").to_numpy()
        found = batch.batch_metrics(embeddings, labels, batches, pre_integrated=pre, seed=seed)
        for method, entry in found.items():
            scores[method].setdefault("scib", {})[key] = {
                k: v for k, v in entry.items() if v is not None
            }
    column, reference = panel.transfer
    moved = batch.cross_batch_transfer(
        embeddings, obs, label_keys=panel.label_keys, transfer_key=column,
        reference=(reference,), n_neighbors=set_config(name, seed, None).eval.n_neighbors,
        seed=seed,
    )  # fmt: skip
    for key, entry in moved["labels"].items():
        for method in embeddings:
            f1 = {m: entry[method][m]["f1_macro"] for m in entry[method]}
            scores[method].setdefault("transfer", {})[key] = {
                m: v for m, v in f1.items() if v is not None
            }
