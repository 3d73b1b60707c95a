"""The scVI-style VAE as a plain torch module: tensors in, tensors out; no AnnData here."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import torch
from torch import nn

LOGVAR_CLAMP = 12.0


@dataclass(frozen=True)
class VAEConfig:
    """Everything needed to rebuild the network; stored with each checkpoint."""

    n_genes: int
    latent_dim: int
    hidden_dims: tuple[int, ...]
    dropout: float
    likelihood: str

    def to_dict(self) -> dict:
        return {**asdict(self), "hidden_dims": list(self.hidden_dims)}

    @classmethod
    def from_dict(cls, data: dict) -> VAEConfig:
        return cls(**{**data, "hidden_dims": tuple(data["hidden_dims"])})


@dataclass(frozen=True)
class LossTerms:
    """Per-batch means over cells of each loss term."""

    loss: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor


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
    """Encoder MLP -> Gaussian latent -> reparameterisation -> decoder MLP."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        hidden = list(cfg.hidden_dims)
        self.encoder = mlp([cfg.n_genes, *hidden], cfg.dropout)
        self.z_mean = nn.Linear(hidden[-1], cfg.latent_dim)
        self.z_logvar = nn.Linear(hidden[-1], cfg.latent_dim)
        self.decoder = mlp([cfg.latent_dim, *reversed(hidden)], cfg.dropout)
        self.x_mean = nn.Linear(hidden[0], cfg.n_genes)

    def inference(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (cells, genes) -> latent mean and log-variance, each (cells, latent_dim)."""
        h = self.encoder(x)
        logvar = self.z_logvar(h).clamp(-LOGVAR_CLAMP, LOGVAR_CLAMP)
        return self.z_mean(h), logvar

    def generative(self, z: torch.Tensor) -> torch.Tensor:
        """z (cells, latent_dim) -> reconstructed mean (cells, genes)."""
        return self.x_mean(self.decoder(z))

    def loss(self, x: torch.Tensor, *, kl_weight: float = 1.0) -> LossTerms:
        """Negative ELBO: Gaussian (MSE) reconstruction summed over genes plus KL to N(0, I)."""
        mean, logvar = self.inference(x)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)
        x_hat = self.generative(z)
        recon = 0.5 * (x_hat.float() - x).pow(2).sum(-1)  # (cells,)
        kl = 0.5 * (mean.float().pow(2) + logvar.float().exp() - 1.0 - logvar.float()).sum(-1)
        return LossTerms(
            loss=(recon + kl_weight * kl).mean(), reconstruction=recon.mean(), kl=kl.mean()
        )
