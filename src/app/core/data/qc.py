"""Cell QC of the preprocess stage: the floors, then fixed thresholds or per-batch MAD outliers.

``fixed`` is scanpy's PBMC 3k tutorial (``max_genes``, ``max_pct_mito``). ``mad`` flags a cell
whose log1p total counts or log1p genes lie more than ``n_mads`` median absolute deviations from
its batch's median, or whose mitochondrial share lies more than ``n_mads_mito`` MADs above it and
above ``max_pct_mito`` (Heumos et al. 2023, single-cell best practices). ``auto`` keeps the fixed
thresholds where they remove little and uses ``mad`` elsewhere. ``min_genes`` and ``min_cells``
apply under every rule.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from src.app.config import PreprocessConfig
from src.app.errors import DataError

if TYPE_CHECKING:
    import anndata as ad
    import pandas as pd

log = logging.getLogger(__name__)

MITO_PREFIXES = ("MT-", "mt-")  # human, mouse
SYMBOL_COLUMNS = ("gene_symbol", "gene_symbols", "feature_name", "symbol")
# auto keeps the fixed thresholds while they remove at most this share of the cells that pass
# the floors, overall and in every batch (PBMC 3k: 62 of 2,700)
AUTO_MAX_FIXED_SHARE = 0.1
ALL_CELLS = "all"  # the one group when there is no batch key


def mito_genes(var: pd.DataFrame) -> np.ndarray:
    """Mask of mitochondrial genes: names starting with ``MT-`` or ``mt-`` in ``var_names`` or in
    a symbol column of ``var`` (``SYMBOL_COLUMNS``)."""
    mask = np.asarray(var.index.astype(str).str.startswith(MITO_PREFIXES), dtype=bool)
    for column in SYMBOL_COLUMNS:
        if column in var:
            mask |= var[column].astype(str).str.startswith(MITO_PREFIXES).to_numpy(dtype=bool)
    return mask


def describe(reason: str, cfg: PreprocessConfig) -> str:
    """One reason for removing cells, with its key and value."""
    return {
        "min_genes": f"fewer than preprocess.min_genes={cfg.min_genes} genes",
        "no_counts": "no counts left after the preprocess.min_cells gene filter",
        "max_genes": f"preprocess.max_genes={cfg.max_genes} genes or more",
        "max_pct_mito": f"preprocess.max_pct_mito={cfg.max_pct_mito}% mitochondrial counts or more",
        "mad_total_counts": f"log1p total counts beyond preprocess.n_mads={cfg.n_mads} MADs",
        "mad_n_genes": f"log1p genes beyond preprocess.n_mads={cfg.n_mads} MADs",
        "mad_pct_mito": (
            f"mitochondrial % above preprocess.n_mads_mito={cfg.n_mads_mito} MADs and above "
            f"preprocess.max_pct_mito={cfg.max_pct_mito}%"
        ),
    }[reason]


def tally(mask: np.ndarray, groups: np.ndarray, batched: bool) -> dict[str, Any]:
    """Cells a reason removed: the total and, with batches, per batch."""
    out: dict[str, Any] = {"total": int(mask.sum())}
    if batched:
        out["by_batch"] = {str(g): int(mask[groups == g].sum()) for g in np.unique(groups)}
    return out


def fixed_rule(obs: pd.DataFrame, cfg: PreprocessConfig, groups: np.ndarray, mito: bool):
    """Masks of the fixed thresholds and their values per group."""
    masks = {"max_genes": (obs["n_genes_by_counts"] >= cfg.max_genes).to_numpy()}
    bounds: dict[str, Any] = {"max_genes": cfg.max_genes}
    if mito:
        masks["max_pct_mito"] = (obs["pct_counts_mt"] >= cfg.max_pct_mito).to_numpy()
        bounds["max_pct_mito"] = cfg.max_pct_mito
    return masks, {str(g): dict(bounds) for g in np.unique(groups)}


def mad_bounds(values: np.ndarray, n_mads: float) -> tuple[float, float] | None:
    """``median -/+ n_mads * MAD`` of the finite values; None where the MAD is 0 (over half the
    cells share one value), so that a batch is not emptied of every cell off its median."""
    from scipy.stats import median_abs_deviation

    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    median, mad = float(np.median(finite)), float(median_abs_deviation(finite))
    if not mad > 0:
        return None
    return median - n_mads * mad, median + n_mads * mad


def mad_rule(obs: pd.DataFrame, cfg: PreprocessConfig, groups: np.ndarray, mito: bool):
    """Masks of the MAD outliers, judged per group, and the bounds per group (in counts, genes
    and %; 'off (MAD 0)' where a metric cannot split the group)."""
    metrics = {
        "mad_total_counts": ("total_counts", np.log1p(obs["total_counts"].to_numpy(float))),
        "mad_n_genes": ("n_genes_by_counts", np.log1p(obs["n_genes_by_counts"].to_numpy(float))),
    }
    pct = obs["pct_counts_mt"].to_numpy(float)
    masks = {name: np.zeros(len(obs), dtype=bool) for name in metrics}
    if mito:
        masks["mad_pct_mito"] = np.zeros(len(obs), dtype=bool)
    thresholds: dict[str, dict[str, Any]] = {}
    for group in np.unique(groups):
        where = groups == group
        entry: dict[str, Any] = {}
        for name, (column, values) in metrics.items():
            bounds = mad_bounds(values[where], cfg.n_mads)
            if bounds is None:
                entry[column] = "off (MAD 0)"
                continue
            masks[name][where] = (values[where] < bounds[0]) | (values[where] > bounds[1])
            entry[column] = [max(0.0, float(np.expm1(bounds[0]))), float(np.expm1(bounds[1]))]
        if mito:
            bounds = mad_bounds(pct[where], cfg.n_mads_mito)
            if bounds is None:
                entry["pct_counts_mt"] = "off (MAD 0)"
            else:
                high = max(bounds[1], cfg.max_pct_mito)  # the hard floor: never below it
                masks["mad_pct_mito"][where] = pct[where] > high
                entry["pct_counts_mt"] = float(high)
        thresholds[str(group)] = entry
    return masks, thresholds


def shares(removed: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """Share of the cells ``removed`` marks, per group."""
    return {str(g): float(removed[groups == g].mean()) for g in np.unique(groups)}


def pick_rule(obs: pd.DataFrame, cfg: PreprocessConfig, groups: np.ndarray, mito: bool):
    """The rule to use and why: ``auto`` takes the fixed thresholds while they remove at most
    ``AUTO_MAX_FIXED_SHARE`` of the cells overall and of every batch, else ``mad``."""
    if cfg.qc != "auto":
        return cfg.qc, f"preprocess.qc={cfg.qc}"
    masks, _ = fixed_rule(obs, cfg, groups, mito)
    removed = np.logical_or.reduce(list(masks.values()))
    per_group = shares(removed, groups)
    worst = max(per_group, key=per_group.get)
    rule = "fixed" if max(removed.mean(), per_group[worst]) <= AUTO_MAX_FIXED_SHARE else "mad"
    limit = f"{AUTO_MAX_FIXED_SHARE:.0%}"
    mito_text = f"max_pct_mito={cfg.max_pct_mito}%" if mito else "max_pct_mito off"
    batch_text = (
        f"; most in one batch: {per_group[worst]:.1%}, {worst}" if len(per_group) > 1 else ""
    )
    why = (
        f"preprocess.qc=auto: the fixed thresholds (max_genes={cfg.max_genes}, {mito_text}) "
        f"remove {int(removed.sum())} of {len(obs)} cells ({removed.mean():.1%}{batch_text}), "
        + (
            f"at most {limit}: using them"
            if rule == "fixed"
            else f"more than {limit}: using mad (n_mads={cfg.n_mads}, n_mads_mito="
            f"{cfg.n_mads_mito}, per batch)"
        )
    )
    return rule, why


def removal_error(n_cells: int, n_kept: int, removed: dict, cfg: PreprocessConfig, rule: str):
    """The DataError for QC that removes too much: each threshold, its cells, the keys."""
    reasons = "; ".join(
        f"{describe(r, cfg)}: {t['total']} cells"
        for r, t in removed.items()
        if t["total"] or r != "no_counts"
    )
    keys = {
        "floors": "preprocess.min_genes",
        "fixed": "preprocess.min_genes, preprocess.max_genes, preprocess.max_pct_mito",
        "mad": "preprocess.min_genes, preprocess.n_mads, preprocess.n_mads_mito, "
        "preprocess.max_pct_mito",
    }[rule]
    share = 1 - n_kept / max(n_cells, 1)
    why = (
        f"more than preprocess.max_removed_fraction={cfg.max_removed_fraction}"
        if share > cfg.max_removed_fraction
        else "fewer than 2 cells"
    )
    by = "the floors" if rule == "floors" else f"the floors and the {rule} rule"
    return DataError(
        f"after QC only {n_kept} of {n_cells} cells would remain ({share:.1%} removed, {why}) "
        f"by {by}: {reasons}; the thresholds do not fit this data: change {keys} "
        "or preprocess.qc (auto, fixed, mad), or raise preprocess.max_removed_fraction"
    )


def too_many_removed(n_cells: int, n_kept: int, cfg: PreprocessConfig) -> bool:
    """Whether QC removes more than ``cfg.max_removed_fraction`` of the cells, or all but one."""
    return n_kept < 2 or (n_cells - n_kept) / n_cells > cfg.max_removed_fraction


def group_labels(obs: pd.DataFrame, batch_key: str | None) -> np.ndarray:
    """Each cell's batch as a string; ``ALL_CELLS`` for every cell without a batch key."""
    if batch_key is None:
        return np.full(len(obs), ALL_CELLS, dtype=object)
    return obs[batch_key].astype(str).to_numpy(dtype=object)


def apply_floors(adata: ad.AnnData, cfg: PreprocessConfig) -> tuple[ad.AnnData, np.ndarray, str]:
    """``min_genes`` on the cells, then ``min_cells`` on the genes of the kept cells (scanpy's
    ``filter_cells`` / ``filter_genes``); returns the kept data, the cells' removed mask and a
    line saying what the floors removed."""
    import scanpy as sc

    n_cells, n_genes = adata.shape
    x = adata.X
    empty_cells = int((np.asarray(x.sum(axis=1)).ravel() == 0).sum())
    empty_genes = int((np.asarray(x.sum(axis=0)).ravel() == 0).sum())
    keep, n_detected = sc.pp.filter_cells(adata, min_genes=cfg.min_genes, inplace=False)
    adata = adata[keep].copy()
    adata.obs["n_genes"] = n_detected[keep]
    sc.pp.filter_genes(adata, min_cells=cfg.min_cells)
    line = (
        f"{n_cells - adata.n_obs} of {n_cells} cells have fewer than min_genes={cfg.min_genes} "
        f"genes ({empty_cells} no counts at all) and {n_genes - adata.n_vars} of {n_genes} genes "
        f"are in fewer than min_cells={cfg.min_cells} cells ({empty_genes} in none)"
    )
    return adata, ~keep, line


def log_removed(removed: dict, cfg: PreprocessConfig) -> None:
    """One line per reason: its cells in all and per batch."""
    for reason, counts in removed.items():
        if reason == "no_counts" and not counts["total"]:
            continue
        by_batch = counts.get("by_batch")
        per = f" ({', '.join(f'{b}: {n}' for b, n in by_batch.items())})" if by_batch else ""
        log.info("QC removed %d cells for %s%s", counts["total"], describe(reason, cfg), per)


def run_qc(
    adata: ad.AnnData, cfg: PreprocessConfig, *, batch_key: str | None = None
) -> tuple[ad.AnnData, dict[str, Any]]:
    """Filter cells and genes by ``cfg.qc``; returns the kept data with scanpy's QC metrics and
    a JSON-able report (rule, why, thresholds per batch, cells removed per reason).

    Raises ``DataError`` when QC removes more than ``cfg.max_removed_fraction`` of the cells or
    leaves fewer than 2 cells or genes; nothing is changed then.
    """
    import scanpy as sc

    n_cells, n_genes = adata.shape
    batched = batch_key is not None
    groups_in = group_labels(adata.obs, batch_key)
    adata, floor_removed, floor_line = apply_floors(adata, cfg)
    removed = {"min_genes": tally(floor_removed, groups_in, batched)}
    if too_many_removed(n_cells, adata.n_obs, cfg):
        raise removal_error(n_cells, adata.n_obs, removed, cfg, "floors")
    if adata.n_vars < 2:
        raise DataError(
            f"after QC only {adata.n_obs} cells x {adata.n_vars} genes remain: {floor_line}"
        )
    adata.var["mt"] = mito_genes(adata.var)
    mito = bool(adata.var["mt"].any())
    if not mito:
        log.info(
            "QC: the mitochondrial filter is off: no gene is named MT- or mt- (var_names, %s)",
            ", ".join(f".var['{c}']" for c in SYMBOL_COLUMNS),
        )
    sc.pp.calculate_qc_metrics(adata, qc_vars=["mt"], percent_top=None, log1p=False, inplace=True)
    groups = group_labels(adata.obs, batch_key)
    rule, why = pick_rule(adata.obs, cfg, groups, mito)
    log.info("QC rule %s: %s", rule, why)
    masks, thresholds = (fixed_rule if rule == "fixed" else mad_rule)(adata.obs, cfg, groups, mito)
    masks = {"no_counts": (adata.obs["total_counts"] <= 0).to_numpy(), **masks}
    removed.update({reason: tally(mask, groups, batched) for reason, mask in masks.items()})
    drop = np.logical_or.reduce(list(masks.values()))
    n_kept = adata.n_obs - int(drop.sum())
    log_removed(removed, cfg)
    if too_many_removed(n_cells, n_kept, cfg):
        raise removal_error(n_cells, n_kept, removed, cfg, rule)
    adata = adata[~drop].copy()
    log.info("QC kept %d cells x %d genes: %s", adata.n_obs, adata.n_vars, floor_line)
    report = {
        "rule": rule,
        "why": why,
        "n_cells": n_cells,
        "n_cells_kept": adata.n_obs,
        "n_genes": n_genes,
        "n_genes_kept": adata.n_vars,
        "n_mito_genes": int(adata.var["mt"].sum()),
        "thresholds": thresholds,
        "removed": removed,
    }
    return adata, report
