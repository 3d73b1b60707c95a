"""The run config's sections: one frozen dataclass each, owning its defaults and range checks,
and ``Config``, the tree of them (the sections after training are in ``sections_results``).
Built from YAML and the environment by ``src.app.config``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from src.app.config_rules import (
    DECODERS,
    DEVICES,
    LIKELIHOODS,
    QC_RULES,
    SOURCE_PBMC3K,
    _require,
    check_safe_name,
)
from src.app.sections_results import BaselineConfig, EvalConfig, MapConfig, VizConfig


@dataclass(frozen=True)
class PathsConfig:
    resources: str = "resources"
    results: str = "results"
    logs: str = "logs"
    machine_profile: str = "config.yml"


@dataclass(frozen=True)
class DataConfig:
    source: str = SOURCE_PBMC3K
    url: str = (
        "https://cf.10xgenomics.com/samples/cell-exp/1.1.0/pbmc3k/"
        "pbmc3k_filtered_gene_bc_matrices.tar.gz"
    )
    labels: str | None = "resources/pbmc3k_labels.csv"
    # an .obs column naming each cell's batch (sample, donor, run): a covariate of the model
    batch_key: str | None = None

    def __post_init__(self) -> None:
        _require(bool(self.source.strip()), "data.source", "must not be empty")
        _require(
            self.batch_key is None or bool(self.batch_key.strip()),
            "data.batch_key",
            "must be null or a column name",
        )


@dataclass(frozen=True)
class PreprocessConfig:
    min_genes: int = 200
    min_cells: int = 3
    max_genes: int = 2500
    max_pct_mito: float = 5.0
    target_sum: float = 1e4
    n_top_genes: int = 2000
    val_fraction: float = 0.1
    qc: str = "auto"
    n_mads: float = 5.0
    n_mads_mito: float = 3.0
    max_removed_fraction: float = 0.5

    def __post_init__(self) -> None:
        for key in ("min_genes", "min_cells", "max_genes"):
            _require(getattr(self, key) >= 0, f"preprocess.{key}", "must be >= 0")
        _require(self.n_top_genes >= 1, "preprocess.n_top_genes", "must be >= 1")
        _require(self.target_sum > 0, "preprocess.target_sum", "must be > 0")
        _require(0 < self.max_pct_mito <= 100, "preprocess.max_pct_mito", "must be in (0, 100]")
        _require(0 <= self.val_fraction < 1, "preprocess.val_fraction", "must be in [0, 1)")
        _require(
            self.qc in QC_RULES,
            "preprocess.qc",
            f"must be one of {list(QC_RULES)}, got '{self.qc}'",
        )
        for key in ("n_mads", "n_mads_mito"):
            _require(getattr(self, key) > 0, f"preprocess.{key}", "must be > 0")
        _require(
            0 < self.max_removed_fraction <= 1,
            "preprocess.max_removed_fraction",
            "must be in (0, 1] (1 turns the guard off)",
        )


@dataclass(frozen=True)
class ModelConfig:
    latent_dim: int = 10
    hidden_dims: tuple[int, ...] = (128,)
    dropout: float = 0.1
    likelihood: str = "gaussian"
    decoder: str = "auto"
    standardize: bool = True

    def __post_init__(self) -> None:
        _require(self.latent_dim >= 1, "model.latent_dim", "must be >= 1")
        _require(
            len(self.hidden_dims) >= 1 and all(h >= 1 for h in self.hidden_dims),
            "model.hidden_dims",
            "must be a non-empty list of positive integers",
        )
        _require(0 <= self.dropout < 1, "model.dropout", "must be in [0, 1)")
        _require(
            self.likelihood in LIKELIHOODS,
            "model.likelihood",
            f"must be one of {list(LIKELIHOODS)}, got '{self.likelihood}'",
        )
        _require(
            self.decoder in DECODERS,
            "model.decoder",
            f"must be one of {list(DECODERS)}, got '{self.decoder}'",
        )


@dataclass(frozen=True)
class TrainConfig:
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float = 0.0
    kl_weight: float = 1.0
    kl_warmup_epochs: int = 0
    early_stopping_patience: int = 0
    grad_clip_norm: float = 10.0
    device: str = "auto"

    def __post_init__(self) -> None:
        _require(self.epochs is None or self.epochs >= 1, "train.epochs", "must be >= 1")
        _require(
            self.batch_size is None or self.batch_size >= 2, "train.batch_size", "must be >= 2"
        )
        _require(self.lr is None or self.lr > 0, "train.lr", "must be > 0")
        _require(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        _require(self.kl_weight > 0, "train.kl_weight", "must be > 0")
        _require(self.kl_warmup_epochs >= 0, "train.kl_warmup_epochs", "must be >= 0")
        _require(self.early_stopping_patience >= 0, "train.early_stopping_patience", "must be >= 0")
        _require(self.grad_clip_norm > 0, "train.grad_clip_norm", "must be > 0")
        _require(self.device in DEVICES, "train.device", f"must be one of {list(DEVICES)}")


@dataclass(frozen=True)
class AnnotationConfig:
    """The classifier head trained jointly with the VAE on a fraction of the labels."""

    label_key: str | None = "cell_type_coarse"
    label_fraction: float = 0.1
    classification_weight: float = 50.0
    pseudo_labels: bool = True
    pseudo_label_neighbors: int = 10
    pseudo_label_start: float = 0.5
    pseudo_label_every: int = 10

    def __post_init__(self) -> None:
        _require(0 < self.label_fraction <= 1, "annotation.label_fraction", "must be in (0, 1]")
        _require(
            self.classification_weight >= 0, "annotation.classification_weight", "must be >= 0"
        )
        _require(
            self.pseudo_label_neighbors >= 1, "annotation.pseudo_label_neighbors", "must be >= 1"
        )
        _require(
            0 <= self.pseudo_label_start < 1, "annotation.pseudo_label_start", "must be in [0, 1)"
        )
        _require(self.pseudo_label_every >= 1, "annotation.pseudo_label_every", "must be >= 1")

    def pseudo_label_epochs(self, epochs: int) -> range:
        """The epochs (0-based) that start with fresh pseudo-labels: from
        ``pseudo_label_start`` of the run (never the first epoch, whose latent is untrained),
        every ``pseudo_label_every`` epochs; empty without a head or with pseudo_labels off."""
        if not self.pseudo_labels or self.label_key is None:
            return range(0)
        start = max(1, round(self.pseudo_label_start * epochs))
        return range(start, epochs, self.pseudo_label_every)


@dataclass(frozen=True)
class Config:
    seed: int = 0
    run_id: str = "pbmc3k"
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    annotation: AnnotationConfig = field(default_factory=AnnotationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    viz: VizConfig = field(default_factory=VizConfig)
    map: MapConfig = field(default_factory=MapConfig)
    # query name -> raw counts (.h5ad, 10x mtx folder or 10x .h5): one map job each
    query: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(self.seed >= 0, "seed", "must be >= 0")
        check_safe_name(self.run_id, "run_id")
        for name, path in self.query.items():
            check_safe_name(name, f"query.{name}")
            _require(bool(path.strip()), f"query.{name}", "must be a path")

    @property
    def run_dir(self) -> Path:
        return Path(self.paths.results) / self.run_id
