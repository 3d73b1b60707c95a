"""The choices and checks shared by the config's sections (``sections``, ``sections_results``)."""

from __future__ import annotations

import re

from src.app.errors import ConfigError

SOURCE_PBMC3K = "pbmc3k"
LIKELIHOODS = ("gaussian", "nb", "zinb", "poisson")
COUNT_LIKELIHOODS = ("nb", "zinb", "poisson")  # scored on the raw counts of the counts layer
# auto: linear without batches, mlp with two or more (src.app.core.model.nn.resolve_decoder)
DECODERS = ("auto", "linear", "mlp")
QC_RULES = ("auto", "fixed", "mad")  # the cell QC rules of src.app.core.data.qc
DEVICES = ("auto", "cpu", "cuda")
BASELINE_METHODS = ("pca", "none")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}': {message}")


def check_safe_name(value: str, key: str) -> str:
    """Refuse names that would escape their folder once used as a path component."""
    _require(
        bool(_SAFE_NAME.match(value)) and value not in {".", ".."},
        key,
        f"'{value}' must use only letters, digits, '.', '_' and '-'",
    )
    return value
