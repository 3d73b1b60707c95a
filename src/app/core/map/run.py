"""The map stage's core: a trained run's checkpoint and a query's raw counts -> the query's
annotated AnnData (+ metrics where it has labels, + a joint UMAP figure).

Steps: align the query's genes to the model's (refit the reference model on the genes both
share when too many are missing), learn the query's batches by architecture surgery with the
reference weights frozen, embed, label each cell from the reference (``predict``), call
``unknown`` the cells far from every reference type, lay reference and query out in one UMAP.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src.app.config import Config
from src.app.core.data.keys import (
    LATENT_KEY,
    MAP_KEY,
    UMAP_KEY,
    UNKNOWN_DISTANCE_KEY,
    predicted_key,
    query_confidence_key,
)
from src.app.core.data.query import (
    QUERY_BATCH,
    GenePlan,
    plan_genes,
    prepare_query,
    query_batches,
    shared_reference,
)
from src.app.core.data_adapter import DataAdapter
from src.app.core.map.predict import (
    UNKNOWN,
    ReferenceClassifier,
    call_labels,
    latent_distances,
    query_metrics,
    unknown_cells,
)
from src.app.core.model_adapter import ModelAdapter
from src.app.errors import DataError
from src.app.machine import Runtime

log = logging.getLogger(__name__)


@dataclass
class Reference:
    """The model a query is mapped with and the reference cells it embeds."""

    model: ModelAdapter
    data: Any  # AnnData: preprocessed reference (log-normalised .X, obs labels)
    refit: bool
    genes: GenePlan


def label_keys(cfg: Config, reference_obs: pd.DataFrame) -> list[str]:
    """The reference's label columns to predict: the head's key, then ``eval.label_keys``."""
    keys = [cfg.annotation.label_key, *cfg.eval.label_keys]
    keys = [k for k in dict.fromkeys(keys) if k is not None and k in reference_obs]
    if not keys:
        raise DataError(
            f"the reference has none of the label columns {list(cfg.eval.label_keys)} "
            "(eval.label_keys) in its .obs: nothing to transfer"
        )
    return keys


def _reference(
    cfg: Config, model: ModelAdapter, ref: Any, raw_ref: Path | None, query: Any, *,
    runtime: Runtime, where: str,
) -> Reference:  # fmt: skip
    """The checkpoint as it is when the query has ``map.min_gene_fraction`` of its genes, else
    a model refit on the shared genes of ``raw_ref`` (the reference's raw counts)."""
    from src.app.core.data.h5ad import read_annotations, read_h5ad

    have_raw = raw_ref is not None and Path(raw_ref).exists()
    ref_genes = (
        list(read_annotations(raw_ref, what="reference raw data")[1])
        if have_raw
        else list(ref.var_names)
    )
    plan = plan_genes(
        model.gene_names, query.var_names, ref_genes, min_shared=cfg.map.min_shared_genes,
        where=where,
    )  # fmt: skip
    log.info(
        "query genes: %d of the model's %d present, %d missing (zero-filled); %d shared with "
        "the reference", len(plan.present), len(plan.model), len(plan.missing), len(plan.shared),
    )  # fmt: skip
    if plan.fraction >= cfg.map.min_gene_fraction:
        return Reference(model, ref, refit=False, genes=plan)
    if not have_raw:
        raise DataError(
            f"{where} has only {len(plan.present)} of the model's {len(plan.model)} genes "
            f"(map.min_gene_fraction {cfg.map.min_gene_fraction}); refitting on the "
            f"{len(plan.shared)} shared genes needs the reference's raw counts ({raw_ref})"
        )
    log.warning(
        "the query has only %.0f %% of the model's genes: refitting the reference model on the "
        "%d genes both data sets share", 100 * plan.fraction, len(plan.shared),
    )  # fmt: skip
    raw = read_h5ad(raw_ref, what="reference raw data")
    shared = shared_reference(
        raw, ref.obs, plan.shared, cfg.preprocess, seed=cfg.seed,
        batch_key=cfg.data.batch_key, where="reference",
    )  # fmt: skip
    refit = ModelAdapter(cfg, runtime=runtime)
    refit.fit(DataAdapter(cfg, runtime=runtime, adata=shared))
    plan = dataclasses.replace(plan, model=tuple(refit.gene_names), present=tuple(refit.gene_names))
    return Reference(refit, shared, refit=True, genes=plan)


def _embed_query(
    cfg: Config, reference: Reference, query: Any, *, runtime: Runtime
) -> tuple[np.ndarray, list[float]]:
    """The query's latent, after surgery for its batches (``map.epochs`` > 0); returns the
    latent and the surgery's loss per epoch."""
    model = reference.model
    qcfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, batch_key=QUERY_BATCH),
        annotation=dataclasses.replace(cfg.annotation, label_key=None),
    )
    if cfg.map.epochs == 0:
        if model.batch_categories:
            raise DataError(
                "the model has batches, so the query's new batches must be learned: "
                "set map.epochs above 0"
            )
        qcfg = dataclasses.replace(qcfg, data=dataclasses.replace(qcfg.data, batch_key=None))
        data = DataAdapter(qcfg, runtime=runtime, adata=query)
        return model.predict(data.iter_all_batches()), []
    grown = model.with_new_batches(sorted(set(query.obs[QUERY_BATCH])))
    data = DataAdapter(qcfg, runtime=runtime, adata=query, batch_categories=grown.batch_categories)
    losses = grown.fit_new_batches(data, epochs=cfg.map.epochs)
    return grown.predict(data.iter_all_batches()), losses


def _dense(x: Any) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)


@dataclass
class Mapped:
    """What the map stage writes: the query's annotated AnnData, its metrics (None without a
    label column of the reference in the query), the joint UMAP's panels, and the model refit
    on the shared genes (None when the checkpoint was used as it is)."""

    annotated: Any
    metrics: dict | None
    figure: dict
    refit: ModelAdapter | None


def map_query(
    cfg: Config, *, model_dir: str | Path, reference: Any, raw_reference: Path | None,
    query: Any, runtime: Runtime, where: str,
) -> Mapped:  # fmt: skip
    """Annotate ``query`` (raw counts) with the run's model and its preprocessed
    ``reference``; ``raw_reference``: the reference's raw counts (read only for a refit)."""
    import anndata as ad

    model = ModelAdapter(cfg, runtime=runtime).load(model_dir)
    model.check_batch_key(cfg.data.batch_key, where=model_dir)
    keys = label_keys(cfg, reference.obs)
    batches = query_batches(query.obs, cfg.map.batch_key, where=where)
    ref = _reference(cfg, model, reference, raw_reference, query, runtime=runtime, where=where)
    library = list(ref.genes.shared) if ref.refit else None
    genes = ref.model.gene_names
    prepared = prepare_query(
        query, genes, target_sum=cfg.preprocess.target_sum, library_genes=library, where=where
    )
    obs = prepared.obs.copy()  # the query's own columns, under its unique cell names
    prepared.obs[QUERY_BATCH] = batches
    ref_data = DataAdapter(cfg, runtime=runtime, adata=ref.data)
    ref_latent = ref.model.predict(ref_data.iter_all_batches())
    latent, losses = _embed_query(cfg, ref, prepared, runtime=runtime)
    metrics, unknown_info, distance = _label_query(
        cfg, ref, ref_latent=ref_latent, latent=latent, query_x=_dense(prepared.X), obs=obs,
        batches=batches, keys=keys,
    )  # fmt: skip
    obs[UNKNOWN_DISTANCE_KEY] = distance.astype(np.float32)
    info = {
        "genes": ref.genes.describe(),
        "refit_on_shared_genes": ref.refit,
        "query_batches": sorted(set(batches)),
        "surgery_epochs": len(losses),
        "surgery_final_loss": losses[-1] if losses else None,
        "unknown": unknown_info,
        "label_keys": keys,
    }
    log.info(
        "mapped %d query cells; called unknown: %s", len(obs),
        {k: v["n_unknown"] for k, v in unknown_info.items()},
    )  # fmt: skip
    out = ad.AnnData(obs=obs, obsm={LATENT_KEY: latent.astype(np.float32)})
    joint = _joint_umap(cfg, ref_latent, latent)
    out.obsm[UMAP_KEY] = joint[len(ref_latent) :]
    out.uns[MAP_KEY] = _plain(info)
    figure = {
        "coords": joint,
        "source": np.r_[np.full(len(ref_latent), "reference"), np.full(len(latent), "query")],
        "label": np.r_[ref.data.obs[keys[0]].astype(object).to_numpy(), labels_of(obs, keys[0])],
        "key": keys[0],
    }
    result = {"map": info, "label_keys": metrics} if metrics else None
    return Mapped(out, result, figure, ref.model if ref.refit else None)


def _label_query(
    cfg: Config, ref: Reference, *, ref_latent: np.ndarray, latent: np.ndarray,
    query_x: np.ndarray, obs: pd.DataFrame, batches: np.ndarray, keys: list[str],
) -> tuple[dict, dict, np.ndarray]:  # fmt: skip
    """Each label key's ``predicted_<key>`` (``unknown`` where far) and confidence, added to
    ``obs``; returns the metrics of the keys the query has, the unknown calls' bounds and each
    query cell's distance to the reference."""
    ref_distance, distance = latent_distances(ref_latent, latent)
    ref_x = _dense(ref.data.X)
    metrics: dict[str, Any] = {}
    unknown_info: dict[str, Any] = {}
    for key in keys:
        ref_labels = ref.data.obs[key].to_numpy()
        clf = ReferenceClassifier.fit(ref_latent, ref_x, ref_labels, seed=cfg.seed)
        labels, confidence = call_labels(clf.proba(latent, query_x), clf.classes)
        unknown, bounds = unknown_cells(
            ref_distance, distance, ref_labels, labels, query_latent=latent,
            query_batches=batches, quantile=cfg.map.unknown_quantile,
        )  # fmt: skip
        labels[unknown] = UNKNOWN
        unknown_info[key] = {**bounds, "n_unknown": int(unknown.sum())}
        obs[predicted_key(key)] = pd.Categorical(labels)
        obs[query_confidence_key(key)] = confidence
        if key in obs:
            metrics[key] = query_metrics(obs[key].to_numpy(), labels, clf.classes)
    return metrics, unknown_info, distance


def labels_of(obs: pd.DataFrame, key: str) -> np.ndarray:
    return obs[predicted_key(key)].astype(object).to_numpy()


def _joint_umap(cfg: Config, ref_latent: np.ndarray, latent: np.ndarray) -> np.ndarray:
    """UMAP coordinates (reference cells, then query cells) of both latents together."""
    from src.app.core.data.graph import nearest_neighbours
    from src.app.core.evaluate.umap import umap_entries

    both = np.vstack([ref_latent, latent]).astype(np.float32)
    idx, dist = nearest_neighbours(both, n_neighbors=max(cfg.viz.n_neighbors - 1, 1))
    obsm, _, _ = umap_entries(both, idx, dist, cfg.viz, seed=cfg.seed, use_rep=LATENT_KEY)
    return obsm[UMAP_KEY]


def _plain(value: Any) -> Any:
    """``info`` with values h5py can store (no None)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return np.asarray(value, dtype=object) if value else np.zeros(0)
    return value
