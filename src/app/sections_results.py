"""The run config's sections of the stages after training: evaluation, the PCA baseline, the
figures and the map stage (``Config`` in ``src.app.sections`` holds them)."""

from __future__ import annotations

from dataclasses import dataclass

from src.app.config_rules import BASELINE_METHODS, _require


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
