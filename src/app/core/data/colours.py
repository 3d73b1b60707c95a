"""One colour per cell type, the same in every figure and in annotated.h5ad's ``.uns``."""

from __future__ import annotations

UNLABELLED_COLOUR = "#d0d0d0"


def category_colours(categories: list[str]) -> dict[str, str]:
    """A fixed hex colour per category (by sorted order), so figures agree with each other."""
    import matplotlib as mpl

    ordered = sorted(set(categories))
    cmap = mpl.colormaps["tab20" if len(ordered) > 10 else "tab10"]
    return {c: mpl.colors.to_hex(cmap(i % cmap.N)) for i, c in enumerate(ordered)}
