"""Shared by the reliability tests: a run folder whose outputs already hold an old version, and
the check that a command fails with one line and leaves every file as it was."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from src.app.cli import main
from tests.conftest import profile_dict

RUN = {
    "run_id": "rel",
    "data": {"labels": None},
    "preprocess": {"min_genes": 0, "min_cells": 0, "max_genes": 10**6, "max_pct_mito": 100.0},
    "model": {"latent_dim": 4, "hidden_dims": [16]},
    "train": {"epochs": 1, "batch_size": 32},
}
OLD = ("raw.h5ad", "pre.h5ad", "latent.npy", "emb.h5ad", "model/weights.safetensors")


@pytest.fixture
def work(tmp_path, monkeypatch):
    """``tmp_path`` with a run config, a machine profile and ``out/`` holding old outputs."""
    (tmp_path / "config.yml").write_text(yaml.safe_dump(profile_dict(annotation_threads=1)))
    paths = {name: str(tmp_path / name) for name in ("resources", "results", "logs")}
    paths["machine_profile"] = str(tmp_path / "config.yml")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({**RUN, "paths": paths}))
    (tmp_path / "out" / "model").mkdir(parents=True)
    for name in OLD:
        (tmp_path / "out" / name).write_bytes(b"old")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ino)
        for p in sorted(root.rglob("*"))
    }


def fails(work: Path, argv: list[str], match: str, capsys, env: dict | None = None) -> None:
    """``argv`` (with ``env``) exits 2 with one ``error:`` line matching ``match`` and leaves
    every file under ``work`` as it was."""
    before = snapshot(work)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        assert main(["--config", str(work / "run.yaml"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: "), err
    assert err.count("\n") == 1, err  # one line, no traceback
    assert re.search(match, err), err
    assert snapshot(work) == before
