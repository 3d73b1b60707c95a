"""bench_panel's data sets (``SETS``: the raw counts, label keys, batch key and transfer split
of each) and the config and machine profile every fit, score and table of a set is made under.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


@dataclasses.dataclass(frozen=True)
class PanelSet:
    path: Path
    label_keys: tuple[str, ...]
    batch_key: str | None = None
    transfer: tuple[str, str] | None = None  # (.obs column, its visible reference value)


SETS = {
    "pbmc3k": PanelSet(DATA / "pbmc3k" / "pbmc3k_raw.h5ad", ("cell_type_coarse", "cell_type")),
    "zheng_facs": PanelSet(DATA / "panel" / "zheng_facs.h5ad", ("label_coarse", "label")),
    "kang_ifnb_muscat": PanelSet(
        DATA / "panel" / "kang_ifnb_muscat.h5ad", ("label",), "batch", ("condition", "ctrl")
    ),
    "cellbench": PanelSet(
        DATA / "panel" / "cellbench.h5ad", ("label",), "batch", ("technology", "CEL-seq2")
    ),
}


def set_config(name: str, seed: int, epochs: int | None) -> Any:
    """The default config with only the data set's keys, the seed (and ``epochs``) changed."""
    from src.app.config import load_config

    panel = SETS[name]
    cfg = load_config(ROOT / "config" / "default.yaml")
    eval_changes: dict[str, Any] = {"label_keys": panel.label_keys}
    eval_fields = {f.name for f in dataclasses.fields(cfg.eval)}
    if panel.transfer is not None and {"transfer_key", "transfer_reference"} <= eval_fields:
        eval_changes.update(transfer_key=panel.transfer[0], transfer_reference=panel.transfer[1:])
    cfg = dataclasses.replace(
        cfg,
        seed=seed,
        data=dataclasses.replace(cfg.data, source=str(panel.path), batch_key=panel.batch_key),
        eval=dataclasses.replace(cfg.eval, **eval_changes),
        annotation=dataclasses.replace(cfg.annotation, label_key=panel.label_keys[0]),
    )
    if epochs is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=epochs))
    return cfg


def bench_profile(cfg: Any, threads: int | None) -> Any:
    """The machine profile (its template where the machine has none) with ``threads``."""
    from src.app.machine import load_machine_profile

    path = ROOT / cfg.paths.machine_profile
    profile = load_machine_profile(path if path.exists() else ROOT / "config.yml.example")
    if threads is None:
        return profile
    return dataclasses.replace(profile, annotation_threads=threads)
