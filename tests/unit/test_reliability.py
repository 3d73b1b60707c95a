"""Bad input at every stage of the CLI: one line ``error: ...`` that names the problem, exit
status 2, no traceback, and no output file created or changed (each case's outputs already hold
an old version, which must survive untouched)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from src.app.checksums import seal
from src.app.cli import main
from src.app.core.data.preprocess import COUNTS_LAYER
from src.app.machine import Runtime
from tests.unit.conftest import RUN, fails

# anndata and scanpy warn about what the cases do on purpose (duplicated names, tiny data)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A small raw AnnData, its preprocessed AnnData and a 1-epoch checkpoint (read only)."""
    from src.app.config import PreprocessConfig, config_from_dict
    from src.app.core.data.preprocess import preprocess
    from src.app.core.data.synthetic import synthetic_counts
    from src.app.core.train import run_training

    root = tmp_path_factory.mktemp("good")
    raw = synthetic_counts(n_cells=60, n_genes=300, seed=2)
    raw.X = raw.X.toarray()
    pre = preprocess(raw, PreprocessConfig(**RUN["preprocess"], n_top_genes=40), seed=0)
    pre.write_h5ad(root / "pre.h5ad")
    runtime = Runtime("cpu", 1, 1, 32, 1e-3, 1, False, 4.0, 0.9)
    cfg = config_from_dict(RUN)
    run_training(cfg, data_path=root / "pre.h5ad", model_dir=root / "model", runtime=runtime)
    return {"raw": raw, "pre": pre, "model": root / "model"}


def changed(change: Callable) -> Callable:
    """An AnnData -> a changed copy."""

    def make(adata):
        adata = adata.copy()
        change(adata)
        return adata

    return make


def set_value(layer: str | None, where: tuple[int, int], value: float) -> Callable:
    def change(adata):
        matrix = adata.X if layer is None else adata.layers[layer]
        matrix = matrix.toarray() if hasattr(matrix, "toarray") else matrix
        matrix[where] = value
        if layer is None:
            adata.X = matrix
        else:
            adata.layers[layer] = matrix

    return changed(change)


def duplicated(axis: str) -> Callable:
    def change(adata):
        names = list(getattr(adata, f"{axis}_names"))
        names[1] = names[0]
        setattr(adata, f"{axis}_names", names)

    return changed(change)


def write_input(path: Path, spec, base, *, sealed: bool = False) -> None:
    """``spec``: None (no file), bytes, "truncated" (half of ``base``'s file), "good" or a
    function of ``base``. ``sealed``: a complete h5ad gets the seal an earlier stage writes, so
    the reading stage checks its checksum instead of walking it in a child process (the walk of
    unsealed files is the download cases' and test_reliability_damage's)."""
    if spec is None:
        return
    if isinstance(spec, bytes):
        path.write_bytes(spec)
        return
    (base if spec in ("good", "truncated") else spec(base)).write_h5ad(path)
    if spec == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif sealed:
        seal(path)


RAW_CASES = {
    "empty": (lambda raw: raw[:0].copy(), r"0 cells x 300 genes; it is empty"),
    "all zero": (changed(lambda a: a.X.fill(0)), r"holds no counts: every value is 0"),
    "NaN": (set_value(None, (0, 0), np.nan), r"holds 1 NaN/Inf values"),
    "Inf": (set_value(None, (1, 1), np.inf), r"holds 1 NaN/Inf values"),
    "negative": (set_value(None, (0, 1), -1), r"holds 1 negative values"),
    "duplicated cells": (duplicated("obs"), r"1 duplicated cell names \(e\.g\. \['CELL00000-1'\]"),
    "duplicated genes": (duplicated("var"), r"1 duplicated gene names \(e\.g\. \['MT-0'\]"),
    "truncated": ("truncated", r"could not be read \(OSError: .*truncated"),
    "not h5ad": (b"PK\x03\x04 a zip", r"could not be read .*is it a complete \.h5ad file"),
    "missing": (None, r"does not exist; point data\.source at a local copy"),
}


@pytest.mark.parametrize("case", RAW_CASES)
def test_download_refuses_bad_raw_data(case, good, work, capsys):
    spec, match = RAW_CASES[case]
    write_input(work / "bad.h5ad", spec, good["raw"])
    env = {"APP__DATA__SOURCE": str(work / "bad.h5ad")}
    fails(work, ["download", "--output", "out/raw.h5ad"], match, capsys, env)


def test_download_without_network_says_how_to_go_offline(work, capsys):
    env = {"APP__DATA__SOURCE": "pbmc3k", "APP__DATA__URL": "http://127.0.0.1:9/pbmc3k.tar.gz"}
    fails(work, ["download", "--output", "out/raw.h5ad"], r"could not download .*APP__DATA__SOURCE", capsys, env)  # fmt: skip


def test_download_with_another_fingerprint_keeps_nothing(good, work, capsys, monkeypatch):
    """A PBMC 3k tarball whose content is not PBMC 3k (served from a file:// URL): refused, and
    neither the download nor an output is kept."""
    import tarfile

    from tests.unit.test_data import write_10x_mtx

    write_10x_mtx(good["raw"], work / "src" / "hg19")
    tarball = work / "pbmc3k.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(work / "src", arcname="filtered_gene_bc_matrices")
    monkeypatch.setenv("APP__DATA__SOURCE", "pbmc3k")
    monkeypatch.setenv("APP__DATA__URL", tarball.as_uri())
    assert main(["--config", str(work / "run.yaml"), "download", "--output", "out/raw.h5ad"]) == 2
    err = capsys.readouterr().err
    assert "does not match its content fingerprint" in err
    assert (work / "out" / "raw.h5ad").read_bytes() == b"old"
    assert not [p for p in (work / "resources").rglob("*") if p.is_file()]


PREPROCESS_CASES = {
    "NaN": (set_value(None, (2, 2), np.nan), {}, r"raw data raw\.h5ad holds 1 NaN/Inf"),
    "too few cells for the split": (
        lambda raw: raw[:2].copy(),
        {"APP__PREPROCESS__VAL_FRACTION": "0.5"},
        r"only 2 cells x \d+ genes remain, 1 of them for training",
    ),
    "too few cells for the folds": (
        lambda raw: raw[:4].copy(),
        {},
        r"only 4 cells remain; eval\.n_folds=5-fold",
    ),
    "missing": (None, {}, r"raw data raw\.h5ad not found; run the download stage first"),
}


@pytest.mark.parametrize("case", PREPROCESS_CASES)
def test_preprocess_refuses_unusable_raw_data(case, good, work, capsys):
    spec, env, match = PREPROCESS_CASES[case]
    write_input(work / "raw.h5ad", spec, good["raw"])
    argv = ["preprocess", "--input", "raw.h5ad", "--output", "out/pre.h5ad"]
    fails(work, argv, match, capsys, env)


def test_preprocess_says_what_qc_removed(good, caplog):
    """Cells and genes without counts are no error: QC removes them and the log says so."""
    from src.app.config import PreprocessConfig
    from src.app.core.data.preprocess import preprocess

    raw = set_value(None, (slice(0, 3), slice(None)), 0)(good["raw"])
    raw.X[:, -5:] = 0
    with caplog.at_level("INFO"):
        pre = preprocess(raw, PreprocessConfig(min_genes=1, min_cells=1, n_top_genes=20), seed=0)
    assert pre.n_obs == 57
    assert re.search(r"3 of 60 cells .* \(3 no counts at all\) and 5 of 300 genes", caplog.text)


def set_obs(column: str, value) -> Callable:
    return changed(lambda pre: pre.obs.__setitem__(column, value))


TRAIN_CASES = {
    "label column missing": ("good", {"APP__ANNOTATION__LABEL_KEY": "nope"}, r"'nope' is not in"),
    "labels all NaN": (set_obs("cell_type_coarse", np.nan), {}, r"no labelled cells \(all NaN\)"),
    "single class": (set_obs("cell_type_coarse", "T"), {}, r"a single class \('T'\)"),
    "non-integer counts": (
        set_value(COUNTS_LAYER, (0, 0), 0.5),
        {"APP__MODEL__LIKELIHOOD": "nb"},
        r"needs non-negative integer counts; found 1 non-integer",
    ),
    "negative counts": (
        set_value(COUNTS_LAYER, (0, 0), -2),
        {"APP__MODEL__LIKELIHOOD": "zinb"},
        r"found 1 negative values",
    ),
    "Inf in X": (set_value(None, (0, 0), np.inf), {}, r"\(\.X\): holds 1 NaN or Inf"),
    "too few training cells": (set_obs("split", "val"), {}, r"has 0 training cells"),
    "duplicated genes": (duplicated("var"), {}, r"1 duplicated gene names"),
    "truncated": ("truncated", {}, r"preprocessed data pre\.h5ad could not be read"),
    "missing": (None, {}, r"pre\.h5ad not found; run the preprocess stage first"),
}


@pytest.mark.parametrize("case", TRAIN_CASES)
def test_train_refuses_bad_preprocessed_data(case, good, work, capsys):
    spec, env, match = TRAIN_CASES[case]
    write_input(work / "pre.h5ad", spec, good["pre"], sealed=True)
    argv = ["train", "--input", "pre.h5ad", "--model_dir", "out/model", "--output_dir", "out"]
    fails(work, argv, match, capsys, env)


def corrupt(name: str, text: str | None = None, **meta) -> Callable[[Path], None]:
    """Change the checkpoint file ``name``: replace its text, or update model.json's vae_config."""

    def change(model: Path) -> None:
        if text is not None:
            (model / name).write_text(text)
            return
        data = json.loads((model / name).read_text())
        data["vae_config"].update(meta)
        (model / name).write_text(json.dumps(data))

    return change


EMBED_CASES = {
    "other genes": (None, r"data genes do not match the checkpoint \(40 genes\): 1 checkpoint"),
    "corrupt weights": (
        corrupt("weights.safetensors", "junk"),
        r"weights\.safetensors is unreadable",
    ),
    "corrupt model.json": (corrupt("model.json", "{"), r"model\.json is unreadable"),
    "model.json of another network": (
        corrupt("model.json", n_genes=41),
        r"vae_config\.n_genes = 41",
    ),
    "weights of another network": (corrupt("model.json", latent_dim=5), r"does not fit its model"),
    "missing": (shutil.rmtree, r"model\.json not found; run the train stage"),
}


@pytest.mark.parametrize("case", EMBED_CASES)
def test_embed_refuses_a_checkpoint_that_does_not_fit(case, good, work, capsys):
    change, match = EMBED_CASES[case]
    shutil.copytree(good["model"], work / "model")
    if change is None:
        names = list(good["pre"].var_names)
        names[0] = "OTHER"
        spec = changed(lambda pre: setattr(pre, "var_names", names))
    else:
        change(work / "model")
        spec = "good"
    write_input(work / "pre.h5ad", spec, good["pre"], sealed=True)
    argv = ["embed", "--model_dir", "model", "--input", "pre.h5ad"]
    argv += ["--latent", "out/latent.npy", "--output", "out/emb.h5ad"]
    fails(work, argv, match, capsys)
