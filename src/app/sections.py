"""The run config's sections: one frozen dataclass each, owning its defaults and range checks,
and ``Config``, the tree of them. Built from YAML and the environment by ``src.app.config``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from src.app.errors import ConfigError

SOURCE_PBMC3K = "pbmc3k"
LIKELIHOODS = ("gaussian", "nb", "zinb", "poisson")
COUNT_LIKELIHOODS = ("nb", "zinb", "poisson")  # scored on the raw counts of the counts layer
DECODERS = ("linear", "mlp")
QC_RULES = ("auto", "fixed", "mad")  # the cell QC rules of src.app.core.data.qc
DEVICES = ("auto", "cpu", "cuda")
BASELINE_METHODS = ("pca", "none")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}': {message}")


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
    decoder: str = "linear"
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
class EvalConfig:
    label_keys: tuple[str, ...] = ("cell_type_coarse", "cell_type")
    n_neighbors: int = 15
    propagation_neighbors: int = 10
    n_folds: int = 5
    label_fractions: tuple[float, ...] = (0.01, 0.05, 0.1, 0.5)
    n_repeats: int = 5
    # cross-batch label transfer: labels of the cells whose .obs[transfer_key] is one of
    # transfer_reference are seen, every other cell is predicted
    transfer_key: str | None = None
    transfer_reference: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _require(len(self.label_keys) >= 1, "eval.label_keys", "must name at least one column")
        _require(self.n_neighbors >= 1, "eval.n_neighbors", "must be >= 1")
        _require(self.propagation_neighbors >= 1, "eval.propagation_neighbors", "must be >= 1")
        _require(self.n_folds >= 2, "eval.n_folds", "must be >= 2")
        _require(
            all(0 < f < 1 for f in self.label_fractions),
            "eval.label_fractions",
            "every fraction must be in (0, 1)",
        )
        _require(
            len(set(self.label_fractions)) == len(self.label_fractions),
            "eval.label_fractions",
            "must not repeat a fraction",
        )
        _require(self.n_repeats >= 1, "eval.n_repeats", "must be >= 1")
        self._check_transfer()

    def _check_transfer(self) -> None:
        _require(
            self.transfer_key is None or bool(self.transfer_key.strip()),
            "eval.transfer_key",
            "must be null or a column name",
        )
        if self.transfer_key is None:
            _require(
                not self.transfer_reference,
                "eval.transfer_reference",
                "is set but eval.transfer_key is null; name the column its values come from",
            )
            return
        _require(
            len(self.transfer_reference) >= 1,
            "eval.transfer_reference",
            f"must list at least one value of eval.transfer_key '{self.transfer_key}'",
        )
        _require(
            all(bool(str(v).strip()) for v in self.transfer_reference),
            "eval.transfer_reference",
            "must not hold an empty value",
        )
        _require(
            len(set(self.transfer_reference)) == len(self.transfer_reference),
            "eval.transfer_reference",
            "must not repeat a value",
        )


@dataclass(frozen=True)
class BaselineConfig:
    """The standard scanpy route (scale, PCA) evaluated with the same protocol as the latent."""

    method: str = "pca"
    n_comps: int = 50
    scale: bool = True
    # harmony on the pca over data.batch_key's batches (only where a batch key is set)
    harmony: bool = True

    def __post_init__(self) -> None:
        _require(
            self.method in BASELINE_METHODS,
            "baseline.method",
            f"must be one of {list(BASELINE_METHODS)}, got '{self.method}'",
        )
        _require(self.n_comps >= 1, "baseline.n_comps", "must be >= 1")


@dataclass(frozen=True)
class VizConfig:
    n_neighbors: int = 15
    min_dist: float = 0.5
    dpi: int = 150

    def __post_init__(self) -> None:
        _require(self.n_neighbors >= 2, "viz.n_neighbors", "must be >= 2")
        _require(0 <= self.min_dist <= 1, "viz.min_dist", "must be in [0, 1]")
        _require(self.dpi >= 10, "viz.dpi", "must be >= 10")


@dataclass(frozen=True)
class MapConfig:
    """Reference -> query mapping (the map stage): genes, query batches and ``unknown`` calls."""

    # the query's .obs column naming its batches; null: the whole query is one batch
    batch_key: str | None = None
    # map with the checkpoint as it is (missing genes zero-filled) when the query has at least
    # this share of its genes; else refit the reference model on the genes both data sets share
    min_gene_fraction: float = 0.9
    min_shared_genes: int = 200  # fail when the data sets share fewer genes
    epochs: int = 100  # epochs fitting the query batches' weights (0: no surgery)
    # `unknown`: a query cell farther from the reference than this share of the reference's cells
    # of its predicted type are (times the query's shift; see core/map/predict.py)
    unknown_quantile: float = 0.1

    def __post_init__(self) -> None:
        _require(
            self.batch_key is None or bool(self.batch_key.strip()),
            "map.batch_key",
            "must be null or a column name",
        )
        _require(0 < self.min_gene_fraction <= 1, "map.min_gene_fraction", "must be in (0, 1]")
        _require(self.min_shared_genes >= 2, "map.min_shared_genes", "must be >= 2")
        _require(self.epochs >= 0, "map.epochs", "must be >= 0")
        _require(0 <= self.unknown_quantile < 0.5, "map.unknown_quantile", "must be in [0, 0.5)")


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


def check_safe_name(value: str, key: str) -> str:
    """Refuse names that would escape their folder once used as a path component."""
    _require(
        bool(_SAFE_NAME.match(value)) and value not in {".", ".."},
        key,
        f"'{value}' must use only letters, digits, '.', '_' and '-'",
    )
    return value
