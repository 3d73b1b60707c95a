"""The scVI-style VAE as a plain torch module: tensors in, tensors out; no AnnData here.

Shapes: ``n`` cells, ``g`` genes, ``d`` latent dimensions, ``c`` label classes.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from src.app.core.data.preprocess import SCALE_MAX
from src.app.core.model.distributions import log_nb_positive, log_poisson, log_zinb_positive

LOGVAR_CLAMP = 12.0
NETWORK_DECODERS = ("linear", "mlp")  # what a VAEConfig (and so a checkpoint) holds
LOG_2PI = math.log(2 * math.pi)
GAUSSIAN_LOGVAR_MIN = -6.0  # gene-wise variance floor of the gaussian likelihood (sd >= 0.05)


def resolve_decoder(choice: str, n_batches: int) -> str:
    """``model.decoder`` -> the network's decoder: ``auto`` is ``mlp`` for data with two or more
    batches and ``linear`` otherwise. Why (the panel benchmark, README): a linear decoder gives
    each batch one offset per gene, which explains an additive batch shift but not a response
    that differs by cell type (IFN-beta in kang), so the latent keeps it and mixes batches less
    (scIB batch correction 0.64 against 0.85 with the MLP); without batches the linear decoder
    leads or is within the seed SD on every label key."""
    if choice != "auto":
        return choice
    return "mlp" if n_batches >= 2 else "linear"


@dataclass(frozen=True)
class VAEConfig:
    """Everything needed to rebuild the network; stored with each checkpoint."""

    n_genes: int
    latent_dim: int
    hidden_dims: tuple[int, ...]
    dropout: float
    likelihood: str
    n_labels: int = 0  # 0: no classifier head
    n_batches: int = 0  # 0: no batch covariate
    decoder: str = "linear"
    standardize: bool = True
    scale_clip: float = SCALE_MAX

    def to_dict(self) -> dict:
        return {**asdict(self), "hidden_dims": list(self.hidden_dims)}

    @classmethod
    def from_dict(cls, data: dict) -> VAEConfig:
        return cls(**{**data, "hidden_dims": tuple(data["hidden_dims"])})


@dataclass(frozen=True)
class LossTerms:
    """Means over the cells of a batch; ``classification`` is 0 without labelled cells."""

    loss: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    classification: torch.Tensor


def mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    """Linear -> BatchNorm -> ReLU -> Dropout for each consecutive pair in ``sizes``."""
    layers: list[nn.Module] = []
    for n_in, n_out in itertools.pairwise(sizes):
        layers += [
            nn.Linear(n_in, n_out),
            nn.BatchNorm1d(n_out, momentum=0.01, eps=1e-3),
            nn.ReLU(),
            nn.Dropout(dropout),
        ]
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """Encoder MLP -> Gaussian latent -> reparameterisation -> decoder (+ classifier head).

    With ``n_batches`` > 0 each cell's batch enters as a one-hot covariate of the encoder's
    input and of the decoder (its input and, for an MLP decoder, its output layer), as in scVI:
    the decoder explains what differs between batches, so the latent need not. The classifier
    head sees the latent only.

    The decoder is linear in z (``linear``, as in LDVAE, Svensson et al. 2020) or an MLP. With a
    count likelihood it gives gene proportions that scale with the observed library size (as
    scVI does), with one dispersion per gene; with ``gaussian`` it gives the mean of the
    (standardised) log-normalised values, with one learned variance per gene. ``standardize``
    z-scores the encoder input (and the gaussian target) per gene with the training data's mean
    and standard deviation, kept as buffers in the checkpoint, clipped at ``scale_clip``.
    """

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        hidden = list(cfg.hidden_dims)
        self.register_buffer("gene_mean", torch.zeros(cfg.n_genes))
        self.register_buffer("gene_scale", torch.ones(cfg.n_genes))
        n_cov = cfg.n_batches
        self.encoder = mlp([cfg.n_genes + n_cov, *hidden], cfg.dropout)
        self.z_mean = nn.Linear(hidden[-1], cfg.latent_dim)
        self.z_logvar = nn.Linear(hidden[-1], cfg.latent_dim)
        if cfg.decoder == "linear":
            self.decoder: nn.Module = nn.Identity()
            out_dim = cfg.latent_dim + n_cov  # the covariate gives each batch a gene offset
        else:
            self.decoder = mlp([cfg.latent_dim + n_cov, *reversed(hidden)], 0.0)
            out_dim = hidden[0] + n_cov
        self.x_out = nn.Linear(out_dim, cfg.n_genes)
        if cfg.likelihood == "gaussian":
            self.log_var = nn.Parameter(torch.zeros(cfg.n_genes))  # gene-wise variance
        if cfg.likelihood in ("nb", "zinb"):
            self.log_theta = nn.Parameter(torch.zeros(cfg.n_genes))  # gene-wise dispersion
        if cfg.likelihood == "zinb":
            self.zi_out = nn.Linear(out_dim, cfg.n_genes)
        if cfg.n_labels > 0:
            self.classifier = nn.Sequential(
                nn.Linear(cfg.latent_dim, hidden[-1]),
                nn.ReLU(),
                nn.Linear(hidden[-1], cfg.n_labels),
            )

    @torch.no_grad()
    def set_standardization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-gene mean and standard deviation (g,) of the training data; genes that do not
        vary keep scale 1."""
        self.gene_mean.copy_(mean)
        self.gene_scale.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def standardized(self, x: torch.Tensor) -> torch.Tensor:
        """x (n, g) z-scored per gene and clipped at +-scale_clip (as ``sc.pp.scale``)."""
        if not self.cfg.standardize:
            return x
        clip = self.cfg.scale_clip
        return ((x - self.gene_mean) / self.gene_scale).clamp(-clip, clip)

    def covariate(self, batch: torch.Tensor | None) -> torch.Tensor | None:
        """Batch codes (n,) -> one-hot (n, batches); None for a model without batches."""
        if self.cfg.n_batches == 0:
            return None
        if batch is None:
            raise ValueError(f"this model has {self.cfg.n_batches} batches: pass each cell's batch")
        return F.one_hot(batch.long(), self.cfg.n_batches).float()

    @staticmethod
    def _with(h: torch.Tensor, onehot: torch.Tensor | None) -> torch.Tensor:
        return h if onehot is None else torch.cat([h, onehot.to(h.dtype)], dim=-1)

    def inference(
        self, x: torch.Tensor, batch: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (n, g) and batch codes (n,) -> latent mean and log-variance, each (n, d)."""
        return self._encode(self.standardized(x), self.covariate(batch))

    def _encode(
        self, xs: torch.Tensor, onehot: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The standardised input xs (n, g) -> latent mean and log-variance, each (n, d)."""
        h = self.encoder(self._with(xs, onehot))
        return self.z_mean(h), self.z_logvar(h).clamp(-LOGVAR_CLAMP, LOGVAR_CLAMP)

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        """z (n, d) -> class logits (n, c)."""
        return self.classifier(z)

    def log_likelihood(
        self,
        z: torch.Tensor,
        target: torch.Tensor,
        library: torch.Tensor,
        *,
        batch: torch.Tensor | None = None,
        standardized_target: torch.Tensor | None = None,
        onehot: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-cell log-likelihood (n,) of ``target`` (n, g) given z (n, d).

        ``library`` (n, 1) is the log of each cell's total counts (count likelihoods only). For
        count likelihoods the constant ``-sum log(x!)`` is left out; the caller adds it.
        ``standardized_target``: the gaussian's target already standardised, where the caller
        has it (the encoder input). ``batch`` (n,): each cell's batch code, or its ``onehot``
        (n, batches) where the caller has it.
        """
        onehot = self.covariate(batch) if onehot is None else onehot
        h = self._with(z, onehot)
        if self.cfg.decoder != "linear":
            h = self._with(self.decoder(h), onehot)
        out = self.x_out(h).float()
        zero = torch.zeros((), device=target.device)
        if self.cfg.likelihood == "gaussian":
            log_var = self.log_var.float().clamp(min=GAUSSIAN_LOGVAR_MIN)
            goal = standardized_target
            sq = (out - (self.standardized(target) if goal is None else goal)).pow(2)
            return -0.5 * (sq / log_var.exp() + log_var + LOG_2PI).sum(-1)
        mu = torch.exp(F.log_softmax(out, dim=-1) + library)  # (n, g) expected counts
        if self.cfg.likelihood == "poisson":
            return log_poisson(target, mu, lgamma_x1=zero).sum(-1)
        theta = self.log_theta.float().exp()
        if self.cfg.likelihood == "nb":
            return log_nb_positive(target, mu, theta, lgamma_x1=zero).sum(-1)
        zi_logits = self.zi_out(h).float()
        return log_zinb_positive(target, mu, theta, zi_logits, lgamma_x1=zero).sum(-1)

    def loss(
        self,
        x: torch.Tensor,
        target: torch.Tensor,
        *,
        library: torch.Tensor,
        labels: torch.Tensor,
        batch: torch.Tensor | None = None,
        label_weights: torch.Tensor | None = None,
        kl_weight: float = 1.0,
        classification_weight: float = 0.0,
    ) -> LossTerms:
        """Negative ELBO (reconstruction + weighted KL) plus the weighted cross-entropy of the
        classifier on labelled cells (``labels >= 0``, each weighted by ``label_weights``,
        default 1); every term a mean over the batch. ``batch`` (n,): each cell's batch code
        (models with batches)."""
        xs = self.standardized(x)
        onehot = self.covariate(batch)
        mean, logvar = self._encode(xs, onehot)
        mean, logvar = mean.float(), logvar.float()
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)
        # the gaussian's target is the encoder input itself: standardised once
        same = target is x
        goal = xs if same else None
        recon = -self.log_likelihood(z, target, library, standardized_target=goal, onehot=onehot)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)  # (n,)
        ce = torch.zeros((), device=x.device)
        if self.cfg.n_labels > 0:
            # all cells through the head, unlabelled ones masked out: no data-dependent shapes,
            # so no host-device sync; a mean over the batch like the other terms
            known = (labels >= 0).float()
            known = known if label_weights is None else known * label_weights
            logits = self.classify(mean).float()
            ce = (F.cross_entropy(logits, labels.clamp(min=0), reduction="none") * known).mean()
        total = (recon + kl_weight * kl).mean() + classification_weight * ce
        return LossTerms(loss=total, reconstruction=recon.mean(), kl=kl.mean(), classification=ce)
