"""The figures (scanpy's ``pl``): UMAP panels, confusion matrices, the label-efficiency curve and
the training curves, each from results already computed. Draws only; never imports torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src.app.core.data.colours import UNLABELLED_COLOUR, category_colours
from src.app.io_utils import atomic_path

# one colour per method and one line style per representation, in every figure
METHOD_STYLE = {
    "knn": ("#1f77b4", "kNN"),
    "logreg": ("#ff7f0e", "logistic regression"),
    "label_propagation": ("#2ca02c", "label propagation"),
    "joint": ("#d62728", "joint classifier head"),
}
REPRESENTATION_STYLE = {"vae": ("-", "o", "VAE latent"), "pca": ("--", "s", "PCA baseline")}


def _pyplot() -> Any:
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, out: str | Path, *, dpi: int) -> None:
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    _pyplot().close(fig)


def _legend(ax: Any, handles: list[Any], *, title: str | None = None) -> None:
    """A legend outside the axes, to their right."""
    ax.legend(
        handles=handles,
        loc="center left",
        bbox_to_anchor=(1.02, 0.5),
        frameon=False,
        title=title,
        fontsize="small",
    )


def plot_embedding(
    coords: np.ndarray,
    panels: dict[str, pd.Series],
    out: str | Path,
    *,
    dpi: int,
    ncols: int | None = None,
    new_row: tuple[str, ...] = (),
) -> None:
    """Scatter ``coords`` (cells, 2) once per panel, coloured by that panel's labels; writes
    ``out`` (PNG).

    Panels fill rows of ``ncols`` (default: one row); a panel titled in ``new_row`` starts a row
    (so a batch panel keeps its own colours and legend). The panels of a row share one colour
    per category (:func:`category_colours`) and one legend, right of the row; unlabelled cells
    (NaN) are drawn grey underneath.
    """
    from matplotlib.lines import Line2D

    plt = _pyplot()
    items = list(panels.items())
    ncols = ncols or len(items)
    rows = _rows(items, ncols, new_row)
    nrows = len(rows)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols + 2.5, 4.6 * nrows), squeeze=False)
    size = max(2.0, min(20.0, 30000 / max(len(coords), 1)))
    for r, row in enumerate(rows):
        values = [labels.astype("object").to_numpy() for _, labels in row]
        cats = sorted({str(v) for vals in values for v in vals[pd.notna(vals)]})
        colours = category_colours(cats)
        any_unlabelled = False
        for ax, (title, _), vals in zip(axes[r], row, values, strict=False):
            known = pd.notna(vals)
            any_unlabelled |= bool((~known).any())
            ax.scatter(*coords[~known].T, s=size, c=UNLABELLED_COLOUR, lw=0)
            names = np.where(known, vals.astype(str), "")
            for cat in cats:
                sel = names == cat
                ax.scatter(*coords[sel].T, s=size, c=colours[cat], lw=0)
            ax.set_title(title, fontsize="medium")
            ax.set_xlabel("UMAP 1")
            ax.set_ylabel("UMAP 2")
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in axes[r][len(row) :]:
            ax.set_visible(False)
        handles = [
            Line2D([], [], marker="o", ls="", color=colours[c], label=c, markersize=6) for c in cats
        ]
        if any_unlabelled:
            handles.append(
                Line2D([], [], marker="o", ls="", color=UNLABELLED_COLOUR, label="unlabelled")
            )
        _legend(axes[r][len(row) - 1], handles)
    fig.tight_layout()
    _save(fig, out, dpi=dpi)


def _rows(items: list[Any], ncols: int, new_row: tuple[str, ...]) -> list[list[Any]]:
    """``(title, labels)`` items in rows of at most ``ncols``, a new row at each title of
    ``new_row``."""
    rows: list[list[Any]] = []
    for item in items:
        if not rows or len(rows[-1]) == ncols or item[0] in new_row:
            rows.append([])
        rows[-1].append(item)
    return rows


def plot_confusion(
    panels: dict[str, tuple[list[str], list[list[int]]]], out: str | Path, *, dpi: int
) -> None:
    """Row-normalised confusion matrices, one panel per ``title -> (class names, counts)`` (rows
    true, columns predicted); each cell shows the share of its true class."""
    plt = _pyplot()
    sizes = [len(classes) for classes, _ in panels.values()]
    width = [max(4.0, 0.55 * n + 2.5) for n in sizes]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(sum(width) + 1.5, max(width) + 0.5), squeeze=False
    )
    for ax, (title, (classes, table)) in zip(axes[0], panels.items(), strict=True):
        counts = np.asarray(table, dtype=float)
        rows = counts.sum(axis=1, keepdims=True)
        share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
        image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        font = "x-small" if len(classes) > 8 else "small"
        for i, j in zip(*np.nonzero(share >= 0.005), strict=True):
            colour = "white" if share[i, j] > 0.6 else "black"
            ax.text(j, i, f"{share[i, j]:.2f}", ha="center", va="center", color=colour, size=font)
        ticks = np.arange(len(classes))
        ax.set_xticks(ticks, classes, rotation=45, ha="right", fontsize=font)
        ax.set_yticks(ticks, [f"{c} ({int(n)})" for c, n in zip(classes, rows[:, 0], strict=True)])
        ax.tick_params(axis="y", labelsize=font)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true (cells)")
        ax.set_title(title, fontsize="medium")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    _save(fig, out, dpi=dpi)


def _curve(points: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fractions, mean and SD (0 where unknown) of one method's label-efficiency points."""
    fracs = sorted(points, key=float)
    kept = [f for f in fracs if points[f]["f1_macro"] is not None]
    mean = np.array([points[f]["f1_macro"] for f in kept], dtype=float)
    sd = np.array([points[f]["f1_macro_sd"] or 0.0 for f in kept], dtype=float)
    return np.array([float(f) for f in kept]), mean, sd


def plot_label_efficiency(
    metrics: dict[str, Any], out: str | Path, *, dpi: int, label_keys: list[str]
) -> None:
    """Macro F1 on the unlabelled cells against the labelled fraction, one panel per label key:
    each method (colour) on the VAE latent (solid) and the PCA baseline (dashed), mean and SD over
    the repeated draws; the classifier head is one star at its own label fraction."""
    from matplotlib.lines import Line2D

    plt = _pyplot()
    keys = [k for k in label_keys if k in metrics.get("label_efficiency", {})]
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys) + 3, 4.4), squeeze=False)
    sources = {"vae": metrics, "pca": metrics.get("baseline") or {}}
    fractions = [float(f) for f in metrics.get("protocol", {}).get("label_fractions", [])]
    shown: dict[str, Any] = {}
    harmonised = sources["pca"].get("method") == "pca+harmony"
    for ax, key in zip(axes[0], keys, strict=True):
        for rep, tree in sources.items():
            line, marker, rep_name = REPRESENTATION_STYLE[rep]
            rep_name = "PCA + Harmony baseline" if rep == "pca" and harmonised else rep_name
            for method, points in tree.get("label_efficiency", {}).get(key, {}).items():
                if method not in METHOD_STYLE:
                    continue
                colour, name = METHOD_STYLE[method]
                x, y, sd = _curve(points)
                label = f"{name} ({rep_name})"
                if method == "joint":  # one point: the head's own label fraction
                    ax.plot(x, y, marker="*", ls="", color=colour, markersize=15, zorder=5)
                    style = {"marker": "*", "ls": "", "markersize": 12}
                else:
                    ax.errorbar(x, y, yerr=sd, color=colour, ls=line, marker=marker, capsize=3)
                    style = {"marker": marker, "ls": line}
                shown.setdefault(label, Line2D([], [], color=colour, label=label, **style))
        ax.set_xscale("log")
        if fractions:
            ax.set_xticks(fractions, [f"{100 * f:g}%" for f in fractions])
            ax.minorticks_off()
        ax.set_ylim(top=1.0)
        ax.set_xlabel("labelled cells (stratified fraction)")
        ax.set_ylabel("macro F1 on the unlabelled cells")
        ax.set_title(key, fontsize="medium")
        ax.grid(alpha=0.3)
    repeats = metrics.get("protocol", {}).get("n_repeats")
    _legend(axes[0][-1], list(shown.values()), title=f"mean and SD over {repeats} draws")
    against = f" against the PCA{' + Harmony' if harmonised else ''} baseline"
    against = against if sources["pca"] else ""
    fig.suptitle(f"Label efficiency: VAE latent{against}")
    fig.tight_layout()
    _save(fig, out, dpi=dpi)


def plot_training_curves(history: list[dict[str, Any]], out: str | Path, *, dpi: int) -> None:
    """Per-epoch loss (train and validation), reconstruction and KL (with the KL weight), and the
    classification loss when the model has a classifier head."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    frame = pd.DataFrame(history)
    epochs = frame["epoch"] if "epoch" in frame else np.arange(1, len(frame) + 1)
    panels = [("loss", ["train_loss", "val_loss"]), ("reconstruction", ["reconstruction"])]
    panels.append(("KL divergence", ["kl"]))
    if "classification" in frame and frame["classification"].fillna(0).abs().sum() > 0:
        panels.append(("classification (cross-entropy)", ["classification"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (title, columns) in zip(axes[0], panels, strict=True):
        for column in columns:
            if column in frame and frame[column].notna().any():
                ax.plot(epochs, frame[column], marker="." if len(frame) < 30 else None)
                ax.lines[-1].set_label(column.replace("_", " "))
        if title == "KL divergence" and "kl_weight" in frame and frame["kl_weight"].nunique() > 1:
            twin = ax.twinx()
            twin.plot(epochs, frame["kl_weight"], color="grey", ls=":", label="KL weight")
            twin.set_ylabel("KL weight")
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if len(ax.lines) > 1:
            ax.legend(frameon=False, fontsize="small")
    fig.suptitle(f"Training curves ({len(frame)} epoch{'s' if len(frame) != 1 else ''})")
    fig.tight_layout()
    _save(fig, out, dpi=dpi)
