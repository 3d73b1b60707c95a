"""Names of what the pipeline writes into AnnData (shared by embed, eval and viz; no torch)."""

LATENT_KEY = "X_vae"  # .obsm: latent mean per cell
PROBA_KEY = "label_proba"  # .obsm: class probabilities of the classifier head
VISIBLE_KEY = "label_visible"  # .obs: whether the cell's label was shown to the model
CATEGORIES_KEY = "label_categories"  # .uns: class names, the columns of PROBA_KEY
LABEL_KEY_KEY = "label_key"  # .uns: the .obs column the classifier head predicts


def predicted_key(label_key: str) -> str:
    """``.obs`` column of the classifier head's predicted label."""
    return f"predicted_{label_key}"
