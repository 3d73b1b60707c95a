"""Cell QC rules (src.app.core.data.qc): fixed, mad per batch, auto's pick, mito lookup, guard."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from src.app.config import PreprocessConfig
from src.app.core.data.qc import run_qc
from src.app.errors import ConfigError, DataError

MITO = ["MT-CO1", "MT-ND1"]


def cell_rows(n: int, *, genes=(80, 120), per_gene=(2, 4), pct_mito=(1.0, 3.0), seed=0):
    """``n`` ordinary cells: (detected non-mito genes, counts per gene, mito % of all counts)."""
    rng = np.random.default_rng(seed)
    return [
        (
            int(rng.integers(*genes, endpoint=True)),
            int(rng.integers(*per_gene, endpoint=True)),
            float(rng.uniform(*pct_mito)),
        )
        for _ in range(n)
    ]


def make_adata(rows, batches=None, *, mito_names=MITO, n_other=None):
    """Counts of ``rows`` (see ``cell_rows``): the first genes detected, mito counts on the
    first mito gene; cells named c0, c1, ... and ``obs['batch']`` when ``batches`` is given."""
    import anndata as ad
    import scipy.sparse as sp

    n_other = n_other or max(g for g, _, _ in rows)
    x = np.zeros((len(rows), len(mito_names) + n_other), dtype=np.float32)
    for i, (genes, per_gene, pct) in enumerate(rows):
        x[i, len(mito_names) : len(mito_names) + genes] = per_gene
        x[i, 0] = round(pct / (100 - pct) * genes * per_gene)
    var = pd.DataFrame(index=[*mito_names, *(f"GENE{i}" for i in range(n_other))])
    obs = pd.DataFrame(index=[f"c{i}" for i in range(len(rows))])
    if batches is not None:
        obs["batch"] = pd.Categorical(batches)
    return ad.AnnData(X=sp.csr_matrix(x), obs=obs, var=var)


def cfg(**changes) -> PreprocessConfig:
    """Floors that keep every hand-made cell and gene; the rest as given."""
    return PreprocessConfig(**{"min_genes": 10, "min_cells": 0, **changes})


def kept(adata, config, batch_key=None) -> tuple[set[str], dict]:
    out, report = run_qc(adata, config, batch_key=batch_key)
    return set(out.obs_names), report


def names(*idx: int) -> set[str]:
    return {f"c{i}" for i in idx}


def test_fixed_reproduces_the_tutorial_thresholds(raw_adata):
    """The cells scanpy's tutorial steps keep: min_genes on all genes, min_cells, then
    n_genes_by_counts < max_genes and pct mito < max_pct_mito on the kept genes."""
    config = PreprocessConfig(qc="fixed", max_genes=350, max_pct_mito=1.0)
    x = raw_adata.X.toarray()
    floor = (x > 0).sum(1) >= config.min_genes
    genes = (x[floor] > 0).sum(0) >= config.min_cells
    sub = x[floor][:, genes]
    mito = raw_adata.var_names[genes].str.startswith("MT-")
    pct = sub[:, mito].sum(1) / sub.sum(1) * 100
    keep = ((sub > 0).sum(1) < config.max_genes) & (pct < config.max_pct_mito)
    expected = set(raw_adata.obs_names[floor][keep])
    got, report = kept(raw_adata, config)
    assert got == expected
    assert 0 < len(expected) < raw_adata.n_obs - 10  # the thresholds bite
    assert report["rule"] == "fixed"
    removed = {k: v["total"] for k, v in report["removed"].items()}
    assert removed == {
        "min_genes": int((~floor).sum()),
        "no_counts": 0,
        "max_genes": int(((sub > 0).sum(1) >= 350).sum()),
        "max_pct_mito": int((pct >= 1.0).sum()),
    }


def test_mad_removes_planted_outliers_per_batch():
    rows = cell_rows(40, seed=1) + cell_rows(40, seed=2)
    rows[3] = (100, 40, 2.0)  # ten times the counts
    rows[5] = (15, 3, 2.0)  # few genes (and counts)
    rows[7] = (100, 3, 30.0)  # dying cell
    rows[9] = (100, 3, 4.5)  # beyond 3 MADs of mito but under max_pct_mito: kept
    rows[45] = (100, 3, 40.0)
    batches = ["a"] * 40 + ["b"] * 40
    got, report = kept(make_adata(rows, batches), cfg(qc="mad"), batch_key="batch")
    assert got == names(*range(80)) - names(3, 5, 7, 45)
    removed = report["removed"]
    assert removed["mad_total_counts"] == {"total": 2, "by_batch": {"a": 2, "b": 0}}
    assert removed["mad_n_genes"] == {"total": 1, "by_batch": {"a": 1, "b": 0}}
    assert removed["mad_pct_mito"] == {"total": 2, "by_batch": {"a": 1, "b": 1}}
    assert set(report["thresholds"]) == {"a", "b"}
    assert report["thresholds"]["a"]["pct_counts_mt"] == 5.0  # the hard floor


def test_a_deeper_batch_is_judged_against_its_own_median():
    rows = cell_rows(40, seed=3) + cell_rows(10, genes=(800, 1200), per_gene=(3, 3), seed=4)
    batches = ["shallow"] * 40 + ["deep"] * 10
    adata = make_adata(rows, batches)
    pooled, _ = kept(adata, cfg(qc="mad"))
    assert pooled == names(*range(40))  # pooled, the deep cells are outliers
    per_batch, report = kept(adata, cfg(qc="mad"), batch_key="batch")
    assert per_batch == names(*range(50))
    low, high = report["thresholds"]["deep"]["n_genes_by_counts"]
    assert low < 800
    assert high > 1200


def test_auto_keeps_fixed_where_it_removes_little(caplog):
    rows = cell_rows(50, seed=5)
    rows[0] = (2600, 3, 2.0)  # over max_genes
    rows[1] = (100, 3, 6.0)  # over max_pct_mito
    with caplog.at_level(logging.INFO, logger="src.app.core.data.qc"):
        got, report = kept(make_adata(rows), cfg())
    assert report["rule"] == "fixed"
    assert got == names(*range(50)) - names(0, 1)
    assert report["removed"]["max_genes"] == {"total": 1}
    assert report["removed"]["max_pct_mito"] == {"total": 1}
    assert "remove 2 of 50 cells (4.0%), at most 10%: using them" in caplog.text


def test_auto_takes_mad_where_fixed_removes_most(caplog):
    rows = cell_rows(40, genes=(2600, 3400), seed=6)
    rows[2] = (3000, 30, 2.0)
    with caplog.at_level(logging.INFO, logger="src.app.core.data.qc"):
        got, report = kept(make_adata(rows), cfg())
    assert report["rule"] == "mad"
    assert got == names(*range(40)) - names(2)
    assert "remove 40 of 40 cells (100.0%), more than 10%: using mad" in caplog.text


def test_auto_takes_mad_where_one_batch_loses_too_much():
    rows = cell_rows(90, seed=7) + cell_rows(10, seed=8)
    rows[90] = rows[91] = (2600, 3, 2.0)  # 2 % of all cells, 20 % of batch b
    got, report = kept(make_adata(rows, ["a"] * 90 + ["b"] * 10), cfg(), batch_key="batch")
    assert report["rule"] == "mad"
    assert "remove 2 of 100 cells (2.0%; most in one batch: 20.0%, b)" in report["why"]
    assert got == names(*range(100)) - names(90, 91)
    assert report["removed"]["mad_n_genes"] == {"total": 2, "by_batch": {"a": 0, "b": 2}}


def test_no_mito_genes_is_logged_and_removes_nothing(caplog):
    rows = cell_rows(30, seed=9)
    rows[4] = (100, 3, 40.0)
    adata = make_adata(rows, mito_names=["ENSG00000198804", "ENSG00000198888"])
    for rule in ("fixed", "mad"):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="src.app.core.data.qc"):
            got, report = kept(adata, cfg(qc=rule))
        assert got == names(*range(30))
        assert report["n_mito_genes"] == 0
        assert not {"max_pct_mito", "mad_pct_mito"} & set(report["removed"])
        assert caplog.text.count("the mitochondrial filter is off") == 1


@pytest.mark.parametrize(
    ("column", "symbols"),
    [
        ("gene_symbol", ["MT-CO1", "MT-ND1"]),
        ("feature_name", ["mt-Co1", "mt-Nd1"]),
        (None, ["mt-Co1", "mt-Nd1"]),  # mouse names in var_names
    ],
)
def test_mito_genes_are_found_by_symbol(column, symbols):
    rows = cell_rows(30, seed=9)
    rows[4] = (100, 3, 40.0)
    ids = ["ENSG00000198804", "ENSG00000198888"]
    adata = make_adata(rows, mito_names=symbols if column is None else ids)
    if column is not None:
        adata.var[column] = [*symbols, *(f"SYM{i}" for i in range(adata.n_vars - 2))]
    for rule in ("fixed", "mad"):
        got, report = kept(adata, cfg(qc=rule))
        assert got == names(*range(30)) - names(4)
        assert report["n_mito_genes"] == 2


def test_guard_names_each_threshold_and_its_cells():
    adata = make_adata(cell_rows(40, genes=(2600, 3400), seed=6))
    with pytest.raises(DataError) as err:
        run_qc(adata, cfg(qc="fixed"))
    message = str(err.value)
    assert "only 0 of 40 cells would remain (100.0% removed" in message
    assert "preprocess.max_removed_fraction=0.5" in message
    assert "preprocess.max_genes=2500 genes or more: 40 cells" in message
    assert "preprocess.max_pct_mito=5.0% mitochondrial counts or more: 0 cells" in message
    assert "fewer than preprocess.min_genes=10 genes: 0 cells" in message
    assert "preprocess.qc" in message
    assert "\n" not in message
    assert kept(adata, cfg(qc="fixed", max_removed_fraction=1.0, max_genes=3000))[0]


def test_guard_counts_the_floors_and_names_the_mad_keys():
    rows = cell_rows(40, seed=10)
    rows[0] = rows[1] = (15, 3, 2.0)  # under min_genes=20
    rows[2] = rows[3] = rows[4] = (100, 40, 2.0)  # ten times the counts
    config = cfg(qc="mad", min_genes=20, max_removed_fraction=0.1)
    with pytest.raises(DataError) as err:
        run_qc(make_adata(rows), config)
    message = str(err.value)
    assert "only 35 of 40 cells would remain (12.5% removed" in message
    assert "fewer than preprocess.min_genes=20 genes: 2 cells" in message
    assert "log1p total counts beyond preprocess.n_mads=5.0 MADs: 3 cells" in message
    assert "preprocess.n_mads, preprocess.n_mads_mito" in message
    with pytest.raises(DataError, match=r"0 of 40 .* by the floors: fewer than .*=500 genes: 40"):
        run_qc(make_adata(rows), cfg(min_genes=500))


def test_a_mad_of_zero_removes_no_one():
    rows = [(100, 3, 2.0)] * 30 + cell_rows(10, seed=11)  # most cells alike: every MAD is 0
    got, report = kept(make_adata(rows), cfg(qc="mad"))
    assert got == names(*range(40))
    assert report["thresholds"]["all"] == {
        "total_counts": "off (MAD 0)",
        "n_genes_by_counts": "off (MAD 0)",
        "pct_counts_mt": "off (MAD 0)",
    }


def test_the_report_is_json_and_h5ad_writable(raw_adata, tmp_path):
    import anndata as ad

    from src.app.core.data.preprocess import preprocess

    raw = raw_adata.copy()
    raw.obs["sample"] = np.where(np.arange(raw.n_obs) % 2, "s1", "s2")
    pre = preprocess(raw, PreprocessConfig(n_top_genes=50), seed=0, batch_key="sample")
    report = pre.uns["preprocess"]["qc"]
    assert report["rule"] == "fixed"
    assert report["n_cells_kept"] == pre.n_obs
    assert json.loads(json.dumps(report)) == report
    pre.write_h5ad(tmp_path / "pre.h5ad")
    back = ad.read_h5ad(tmp_path / "pre.h5ad").uns["preprocess"]["qc"]
    assert back["removed"]["min_genes"]["by_batch"] == report["removed"]["min_genes"]["by_batch"]


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"qc": "strict"}, "preprocess.qc"),
        ({"n_mads": 0}, "preprocess.n_mads"),
        ({"n_mads_mito": -1.0}, "preprocess.n_mads_mito"),
        ({"max_removed_fraction": 0.0}, "preprocess.max_removed_fraction"),
        ({"max_removed_fraction": 1.5}, "preprocess.max_removed_fraction"),
    ],
)
def test_qc_keys_are_range_checked(changes, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        PreprocessConfig(**changes)
