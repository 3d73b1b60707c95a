"""bench_panel's cache of latents: ``<cache>/<set>/<method>_seed<k>.npz`` with a ``.json`` record
(timing, peak RSS and the key it was made under), and the keys a cached latent must match to be
reused (the cells, threads, config, machine profile, code and scvi-tools version it depends on).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any

from bench.panel_sets import SETS, bench_profile, set_config

ROOT = Path(__file__).resolve().parents[1]
# the code a latent of ours depends on besides its config: what the workflow's train rule reads
OURS_CODE = (
    "src/app/core/data",
    "src/app/core/model",
    "src/app/core/data_adapter.py",
    "src/app/core/model_adapter.py",
    "src/app/core/train.py",
)
PCA_CODE = ("src/app/core/evaluate/baseline.py",)


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def code_hash(paths: tuple[str, ...]) -> str:
    """One hash of the Python files under ``paths`` (files or folders, relative to the root)."""
    h = hashlib.sha256()
    for rel in paths:
        top = ROOT / rel
        for file in sorted(top.rglob("*.py")) if top.is_dir() else [top]:
            h.update(str(file.relative_to(ROOT)).encode() + file.read_bytes())
    return h.hexdigest()[:16]


def cells_hash(adata: Any) -> str:
    """The cells and genes of a preprocessed file (what scvi and pca see), not its split."""
    return digest([list(map(str, adata.obs_names)), list(map(str, adata.var_names))])


def cache_paths(folder: Path, method: str, seed: int) -> tuple[Path, Path]:
    return folder / f"{method}_seed{seed}.npz", folder / f"{method}_seed{seed}.json"


def cached(folder: Path, method: str, seed: int, key: dict[str, Any]) -> dict[str, Any] | None:
    """The cached record of (method, seed) when it was made under ``key``, else None."""
    npz, meta = cache_paths(folder, method, seed)
    if not (npz.exists() and meta.exists()):
        return None
    record = json.loads(meta.read_text())
    return record if record.get("key") == key else None


def cache_keys(name: str, seed: int, cells: str, args: argparse.Namespace) -> dict[str, dict]:
    """What each method's cached latent must have been made under to be reused."""
    from src.app.config import config_to_dict

    cfg = set_config(name, seed, args.epochs_ours)
    try:
        from src.app.core.evaluate.baseline import harmony  # noqa: F401
    except ImportError:
        has_harmony = False
    else:
        has_harmony = SETS[name].batch_key is not None
    profile = bench_profile(cfg, args.threads)
    common = {"cells": cells, "threads": profile.annotation_threads}
    # the profile's tunables that resolve ours' null config keys
    tunables = [profile.batch_size, profile.learning_rate, profile.max_epochs, profile.gpu_vram_gb]
    return {
        "ours": {
            **common,
            "config": digest(config_to_dict(cfg)),
            "profile": digest(tunables),
            "code": code_hash(OURS_CODE),
        },
        "scvi": {
            **common,
            "batch_key": SETS[name].batch_key,
            "epochs": args.epochs_scvi,
            "version": importlib.metadata.version("scvi-tools"),
        },
        "pca": {
            **common,
            "baseline": digest(config_to_dict(cfg)["baseline"]),
            "code": code_hash(PCA_CODE),
            "harmony": has_harmony,
        },
    }
