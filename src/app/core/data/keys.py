"""Names of what the pipeline writes into AnnData (shared by embed, eval, annotate and viz; no
torch)."""

LATENT_KEY = "X_vae"  # .obsm: latent mean per cell
PROBA_KEY = "label_proba"  # .obsm: class probabilities of the classifier head
VISIBLE_KEY = "label_visible"  # .obs: whether the cell's label was shown to the model
CATEGORIES_KEY = "label_categories"  # .uns: class names, the columns of PROBA_KEY
LABEL_KEY_KEY = "label_key"  # .uns: the .obs column the classifier head predicts
UMAP_KEY = "X_umap"  # .obsm: 2-D UMAP of the latent (scanpy's name, so sc.pl.umap finds it)
PCA_KEY = "X_pca"  # .obsm: the PCA baseline (scanpy's name)
CONFIG_UNS = "config"  # .uns of annotated.h5ad: the run config as JSON text
METRICS_UNS = "metrics"  # .uns of annotated.h5ad: metrics.json as JSON text
MAP_KEY = "map"  # .uns of a mapped query: genes, refit, batches, unknown bounds
UNKNOWN_DISTANCE_KEY = "unknown_distance"  # .obs of a mapped query: distance to the reference


def predicted_key(label_key: str, method: str | None = None) -> str:
    """``.obs`` column of a predicted label: ``predicted_<label_key>`` for the classifier head,
    ``predicted_<label_key>_<method>`` for a classifier fitted on the latent (``knn``, ...)."""
    return f"predicted_{label_key}" if method is None else f"predicted_{label_key}_{method}"


def confidence_key(label_key: str, method: str | None = None) -> str:
    """``.obs`` column of the predicted label's probability (the largest class probability)."""
    return f"{predicted_key(label_key, method)}_confidence"


def query_confidence_key(label_key: str) -> str:
    """``.obs`` column of a mapped query's label confidence: ``<label_key>_confidence``."""
    return f"{label_key}_confidence"


def colours_key(column: str) -> str:
    """``.uns`` entry scanpy reads the colours of a categorical ``.obs`` column from."""
    return f"{column}_colors"
