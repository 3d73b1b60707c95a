"""Where a run's files live; one definition shared by the CLI and the Snakefile."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from src.app.config import Config, check_safe_name
from src.app.core.data.download import source_name


def child(root: str | Path, name: str, *, key: str) -> Path:
    """``root / name`` for a ``name`` that comes from config or data; refuses anything but one
    plain file or folder name (letters, digits, '.', '_', '-'; not '.' or '..'), so the result
    never escapes ``root``."""
    check_safe_name(name, key)
    return Path(root) / name


# the plot stage's figures, written as figures/<name>.png
FIGURES = ("umap", "confusion", "label_efficiency", "training_curves")


def figure_path(figures: str | Path, name: str) -> Path:
    return Path(figures) / f"{name}.png"


@dataclass(frozen=True)
class RunLayout:
    """Files of one run under ``root`` (``results/<run_id>/`` unless ``--output_dir`` says)."""

    root: Path

    @classmethod
    def of(cls, cfg: Config, output_dir: str | Path | None = None) -> RunLayout:
        if output_dir is not None:
            return cls(Path(output_dir))
        return cls(child(cfg.paths.results, cfg.run_id, key="run_id"))

    @property
    def preprocessed(self) -> Path:
        return self.root / "preprocessed.h5ad"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def latent(self) -> Path:
        return self.root / "latent.npy"

    @property
    def embedded(self) -> Path:
        return self.root / "embedded.h5ad"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def annotated(self) -> Path:
        return self.root / "annotated.h5ad"

    @property
    def umap(self) -> Path:
        return figure_path(self.figures, "umap")

    @property
    def figure_files(self) -> dict[str, Path]:
        """Every figure of the plot stage, by name."""
        return {name: figure_path(self.figures, name) for name in FIGURES}

    @property
    def config_used(self) -> Path:
        return self.root / "config.used.yaml"


def raw_path(cfg: Config) -> Path:
    """The download stage's output: raw counts of ``cfg.data.source`` as h5ad."""
    raw = Path(cfg.paths.resources) / "raw"
    return child(raw, f"{source_name(cfg.data.source)}.h5ad", key="data.source")
