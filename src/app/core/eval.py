"""Public face of the evaluation (SPEC: latent -> annotation metrics); the code lives in
``core/evaluate/``: ``representation`` (metrics of one representation), ``run`` (a run's
metrics.json), ``annotate`` (annotated.h5ad), ``classify``, ``metrics``, ``baseline``, ``umap``."""

from src.app.core.evaluate.annotate import annotations
from src.app.core.evaluate.classify import METHODS, TRANSFER_METHODS
from src.app.core.evaluate.metrics import classification_metrics
from src.app.core.evaluate.representation import evaluate_representation
from src.app.core.evaluate.run import (
    Evaluation,
    evaluate_joint,
    evaluate_latent,
    evaluate_run,
    summary_table,
)

__all__ = [
    "METHODS",
    "TRANSFER_METHODS",
    "Evaluation",
    "annotations",
    "classification_metrics",
    "evaluate_joint",
    "evaluate_latent",
    "evaluate_representation",
    "evaluate_run",
    "summary_table",
]
