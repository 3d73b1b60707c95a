"""``ModelAdapter``: the framework-facing side of the model (fit, predict, save, load).

A checkpoint folder holds ``weights.safetensors`` (tensors only, nothing is unpickled) and
``model.json`` (network config, gene names, versions) and ``history.json``, and
``SHA256SUMS`` of them, which :meth:`ModelAdapter.load` checks last.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from src.app.checksums import manifest_problem
from src.app.config import Config
from src.app.core.data_adapter import Batch, DataAdapter
from src.app.core.model.checkpoint import check_vae_config, read_json
from src.app.core.model.nn import VAE, VAEConfig, resolve_decoder
from src.app.core.model.runtime import runtime_for
from src.app.core.model.surgery import fit_new_batches, with_new_batches
from src.app.core.model.train_loop import encode_means, on_device, train_vae
from src.app.errors import CheckpointError
from src.app.io_utils import atomic_path
from src.app.machine import Runtime

WEIGHTS_FILE = "weights.safetensors"
META_FILE = "model.json"
HISTORY_FILE = "history.json"
# 2: decoder choice, per-gene standardisation buffers and the gaussian's learned variance
CHECKPOINT_FORMAT = 2
PREDICT_CHUNK = 8192  # cells per forward pass when predicting from an array


def _set_deterministic(mode: bool) -> None:
    """``torch.use_deterministic_algorithms(mode, warn_only=True)`` without its import of
    ``torch._inductor`` (about 1.7 s per process, only to set a compiler flag we never use: the
    model is not compiled); the public call where torch lacks the internal setter."""
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:
        torch.use_deterministic_algorithms(mode, warn_only=True)
    else:
        setter(mode, warn_only=True)


class ModelAdapter:
    """Fit the VAE on a :class:`DataAdapter`, return latent means, save and reload it."""

    def __init__(self, cfg: Config, *, runtime: Runtime | None = None) -> None:
        self.cfg = cfg
        self.runtime = runtime if runtime is not None else runtime_for(cfg)
        self.module: VAE | None = None
        self.gene_names: list[str] = []
        self.label_categories: list[str] = []
        self.batch_key: str | None = None
        self.batch_categories: list[str] = []
        self.history: list[dict[str, float]] = []

    def _build(self, n_genes: int, n_labels: int, n_batches: int) -> VAE:
        m = self.cfg.model
        vae_cfg = VAEConfig(
            n_genes=n_genes,
            latent_dim=m.latent_dim,
            hidden_dims=m.hidden_dims,
            dropout=m.dropout,
            likelihood=m.likelihood,
            n_labels=n_labels,
            n_batches=n_batches,
            decoder=resolve_decoder(m.decoder, n_batches),
            standardize=m.standardize,
        )
        torch.manual_seed(self.cfg.seed)
        return VAE(vae_cfg).to(self.runtime.device)

    def fit(self, batches: DataAdapter) -> list[dict[str, float]]:
        """Train on ``batches.iter_train_batches()``, validating on ``iter_val_batches()``.

        Bit-identical on the CPU for the same config, seed and data.
        """
        self.gene_names = list(batches.gene_names)
        self.label_categories = list(batches.label_categories)
        self.batch_categories = list(batches.batch_categories)
        self.batch_key = self.cfg.data.batch_key if self.batch_categories else None
        self.module = self._build(
            len(self.gene_names), len(self.label_categories), len(self.batch_categories)
        )
        if self.module.cfg.standardize:
            self.module.set_standardization(*batches.encoder_moments())
        was_deterministic = torch.are_deterministic_algorithms_enabled()
        _set_deterministic(True)
        try:
            self.history = train_vae(self.module, batches, runtime=self.runtime, cfg=self.cfg)
        finally:
            _set_deterministic(was_deterministic)
        return self.history

    def _require_module(self) -> VAE:
        if self.module is None:
            raise RuntimeError("the model is not trained or loaded; call fit() or load() first")
        return self.module

    def _inputs(
        self, batches: Iterable[Batch] | np.ndarray, batch: np.ndarray | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Encoder inputs and batch codes in chunks: ``Batch.x`` and ``Batch.batch``, or rows of
        an array of encoder inputs (log1p counts for count likelihoods, log-normalised values
        for ``gaussian``) with ``batch``, each cell's code in ``batch_categories``."""
        module = self._require_module()
        n_genes, n_batches = module.cfg.n_genes, module.cfg.n_batches
        if not isinstance(batches, np.ndarray):
            yield from ((b.x, b.batch if n_batches else None) for b in batches)
            return
        if batches.ndim != 2 or batches.shape[1] != n_genes:
            raise ValueError(f"expected an array of shape (cells, {n_genes}), got {batches.shape}")
        if n_batches and (batch is None or len(batch) != len(batches)):
            raise ValueError(f"this model has {n_batches} batches: pass batch, one code per cell")
        x = torch.from_numpy(np.ascontiguousarray(batches, dtype=np.float32))
        codes = torch.from_numpy(np.asarray(batch, dtype=np.int64)) if n_batches else None
        for start in range(0, len(x), PREDICT_CHUNK):
            end = start + PREDICT_CHUNK
            yield x[start:end], None if codes is None else codes[start:end]

    @torch.inference_mode()
    def predict(
        self, batches: Iterable[Batch] | np.ndarray, batch: np.ndarray | None = None
    ) -> np.ndarray:
        """Latent means (cells, latent_dim) for batches or an array of encoder inputs (with
        ``batch``, each cell's batch code, for a model with batches)."""
        inputs = self._inputs(batches, batch)
        return encode_means(self._require_module(), inputs, self.runtime.device)

    @torch.inference_mode()
    def embed(
        self, batches: Iterable[Batch] | np.ndarray, batch: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Latent means (cells, latent_dim) and, for a model with a classifier head, its class
        probabilities (cells, classes; in the order of ``label_categories``), else None: one
        encoder pass for both."""
        module = self._require_module().eval()
        device = torch.device(self.runtime.device)
        means, probs = [], []
        for x, codes in self._inputs(batches, batch):
            mean = module.inference(*on_device(x, codes, device))[0]
            means.append(mean.float().cpu())
            if module.cfg.n_labels > 0:
                probs.append(torch.softmax(module.classify(mean).float(), -1).cpu())
        n_labels = module.cfg.n_labels
        latent = torch.cat(means).numpy() if means else np.zeros((0, module.cfg.latent_dim))
        if n_labels == 0:
            return latent, None
        return latent, torch.cat(probs).numpy() if probs else np.zeros((0, n_labels))

    def predict_labels(
        self, batches: Iterable[Batch] | np.ndarray, batch: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The classifier head's label (cells,) and class probabilities (cells, classes) for
        every cell; classes in the order of ``label_categories``."""
        if self._require_module().cfg.n_labels == 0:
            raise RuntimeError(
                "this model has no classifier head; train with annotation.label_key set"
            )
        _, proba = self.embed(batches, batch)
        return self.label_names(proba), proba

    def label_names(self, proba: np.ndarray) -> np.ndarray:
        """The most probable class name (cells,) of the head's probabilities (cells, classes)."""
        return np.asarray(self.label_categories, dtype=object)[proba.argmax(1)]

    def with_new_batches(self, names: list[str]) -> ModelAdapter:
        """A copy of this model for a query: ``names`` appended to its batches, whose weights
        alone are trainable (architecture surgery, ``core/model/surgery.py``)."""
        grown = ModelAdapter(self.cfg, runtime=self.runtime)
        grown.module = with_new_batches(self._require_module(), len(names))
        grown.gene_names, grown.label_categories = self.gene_names, self.label_categories
        grown.batch_categories = [*self.batch_categories, *names]
        return grown

    def fit_new_batches(self, batches: DataAdapter, *, epochs: int) -> list[float]:
        """Train the new batches' weights (see :meth:`with_new_batches`) on the query's
        ``batches``; returns the loss of each epoch."""
        return fit_new_batches(
            self._require_module(), batches.iter_train_batches, epochs=epochs,
            lr=self.runtime.lr, grad_clip_norm=self.cfg.train.grad_clip_norm,
        )  # fmt: skip

    def check_batch_key(self, batch_key: str | None, *, where: str | Path) -> None:
        """Fail when the config's ``data.batch_key`` is not the one the model was trained with."""
        if self.batch_key != batch_key:
            raise CheckpointError(
                f"checkpoint {where} was trained with data.batch_key {self.batch_key!r}, the "
                f"config says {batch_key!r}: set it back or retrain"
            )

    def check_genes(self, gene_names: list[str]) -> None:
        """Fail with what differs when data genes do not match the checkpoint's."""
        if list(gene_names) == self.gene_names:
            return
        ours, theirs = set(self.gene_names), set(gene_names)
        missing, extra = sorted(ours - theirs), sorted(theirs - ours)
        detail = (
            f"{len(missing)} checkpoint genes missing from the data (e.g. {missing[:3]}), "
            f"{len(extra)} data genes unknown to the checkpoint (e.g. {extra[:3]})"
            if missing or extra
            else "the same genes in a different order"
        )
        raise CheckpointError(
            f"data genes do not match the checkpoint ({len(self.gene_names)} genes): {detail}"
        )

    def save(self, path: str | Path) -> None:
        """Write the checkpoint folder ``path`` atomically."""
        from safetensors.torch import save_file

        module = self._require_module()
        meta = {
            "format": CHECKPOINT_FORMAT,
            "vae_config": module.cfg.to_dict(),
            "gene_names": self.gene_names,
            "label_key": self.cfg.annotation.label_key if self.label_categories else None,
            "label_categories": self.label_categories,
            "batch_key": self.batch_key,
            "batch_categories": self.batch_categories,
            "seed": self.cfg.seed,
            "torch_version": torch.__version__,
        }
        state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        with atomic_path(path, is_dir=True) as tmp:
            save_file(state, str(tmp / WEIGHTS_FILE))
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
            (tmp / HISTORY_FILE).write_text(json.dumps(self.history, indent=2))

    def load(self, path: str | Path) -> ModelAdapter:
        """Rebuild the network from the checkpoint folder ``path``; returns ``self``."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        meta = read_json(path / META_FILE, dict)
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"checkpoint {path / META_FILE} has format {meta.get('format')!r}; this version "
                f"reads format {CHECKPOINT_FORMAT}: retrain (the train stage) to rebuild it"
            )
        try:
            vae_cfg = VAEConfig.from_dict(meta["vae_config"])
            gene_names = [str(g) for g in meta["gene_names"]]
            label_categories = [str(c) for c in meta["label_categories"]]
            batch_key = meta.get("batch_key")
            batch_categories = [str(c) for c in meta.get("batch_categories", [])]
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"checkpoint {path / META_FILE} lacks {exc}") from None
        check_vae_config(
            vae_cfg, gene_names, label_categories, batch_categories, where=path / META_FILE
        )
        if bool(batch_categories) != isinstance(batch_key, str):
            raise CheckpointError(
                f"checkpoint {path / META_FILE} is inconsistent: batch_key {batch_key!r} with "
                f"{len(batch_categories)} batch categories"
            )
        try:
            state = load_file(str(path / WEIGHTS_FILE))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(
                f"checkpoint {path / WEIGHTS_FILE} is unreadable: {exc}"
            ) from None
        with torch.device("meta"):  # shapes only: nothing is allocated before they are checked
            module = VAE(vae_cfg)
        try:
            module.load_state_dict(state, assign=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"checkpoint {path} does not fit its model config: {exc}"
            ) from None
        history_file = path / HISTORY_FILE
        history = read_json(history_file, list) if history_file.exists() else []
        problem = manifest_problem(path)  # last: the checks above give the clearer messages
        if problem is not None:
            raise CheckpointError(f"checkpoint {path} is damaged: {problem}; retrain it")
        self.module = module.to(self.runtime.device).eval()
        self.gene_names = gene_names
        self.label_categories = label_categories
        self.batch_key, self.batch_categories = batch_key, batch_categories
        self.history = history
        return self
