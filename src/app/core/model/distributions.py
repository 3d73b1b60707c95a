"""Count likelihoods for the decoder: negative binomial, zero-inflated NB and Poisson.

All functions are pure torch, return per-element log-probabilities with the broadcast shape of
their inputs (no reduction) and work in float32 and float64. The NB uses the scVI
parameterisation: mean ``mu`` and inverse dispersion ``theta``, so ``var = mu + mu**2 / theta``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# above this theta, lgamma(x + theta) - lgamma(theta) comes from stirling's series: the direct
# difference of two huge lgammas loses every digit in float32 (lgamma(1e8) ~ 1.7e9)
_STIRLING_THETA = 1e3


def _lgamma_ratio(x: Tensor, theta: Tensor) -> Tensor:
    """Return ``lgamma(x + theta) - lgamma(theta)`` without cancellation for large ``theta``.

    Parameters
    ----------
    x
        Non-negative counts.
    theta
        Positive inverse dispersion.

    Returns
    -------
    Tensor
        The difference, broadcast over ``x`` and ``theta``.
    """
    direct = torch.lgamma(x + theta) - torch.lgamma(theta)
    # stirling: lgamma(z) = (z - 1/2) log z - z + log(2 pi)/2 + 1/(12 z) + O(z^-3); the difference
    # regrouped so no two huge terms cancel; the error is below 1 / (360 theta^3) ~ 3e-12 at the switch
    big = theta.clamp(min=_STIRLING_THETA)  # keeps the unused branch (and its gradient) benign
    stirling = (
        (big - 0.5) * torch.log1p(x / big)
        + x * torch.log(x + big)
        - x
        - x / (12.0 * big * (x + big))
    )
    return torch.where(theta > _STIRLING_THETA, stirling, direct)


def _nb_parts(
    x: Tensor, mu: Tensor, theta: Tensor, eps: float, lgamma_x1: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Split the NB log-pmf into ``log NB(0 | mu, theta)`` and the part that vanishes at x = 0.

    Returns
    -------
    tuple of Tensor
        ``(log_nb_zero, rest)`` with ``log NB(x) = log_nb_zero + rest``.
    """
    if lgamma_x1 is None:
        lgamma_x1 = torch.lgamma(x + 1.0)
    # theta * (log(theta + eps) - log(theta + mu + eps)) written with log1p: exact for
    # mu << theta, where the difference of two logs rounds to zero
    log_nb_zero = -theta * torch.log1p(mu / (theta + eps))
    log_theta_mu = torch.log(theta + mu + eps)
    rest = x * (torch.log(mu + eps) - log_theta_mu) + _lgamma_ratio(x, theta) - lgamma_x1
    return log_nb_zero, rest


def log_nb_positive(
    x: Tensor,
    mu: Tensor,
    theta: Tensor,
    *,
    eps: float = 1e-8,
    lgamma_x1: Tensor | None = None,
) -> Tensor:
    """Log-probability of counts under a negative binomial with mean and inverse dispersion.

    Parameters
    ----------
    x
        Observed counts (non-negative integers stored in a float tensor).
    mu
        Mean, ``>= 0``.
    theta
        Inverse dispersion, ``> 0``; ``var = mu + mu**2 / theta``.
    eps
        Offset inside the logarithms that keeps ``mu`` near 0 finite.
    lgamma_x1
        Precomputed ``lgamma(x + 1)``, a constant of the data set; computed when None.

    Returns
    -------
    Tensor
        ``log NB(x | mu, theta)`` per element, with the broadcast shape of the inputs.
    """
    log_nb_zero, rest = _nb_parts(x, mu, theta, eps, lgamma_x1)
    return log_nb_zero + rest


def log_zinb_positive(
    x: Tensor,
    mu: Tensor,
    theta: Tensor,
    zi_logits: Tensor,
    *,
    eps: float = 1e-8,
    lgamma_x1: Tensor | None = None,
) -> Tensor:
    """Log-probability of counts under a zero-inflated negative binomial.

    With dropout probability ``pi = sigmoid(zi_logits)``:
    ``p(0) = pi + (1 - pi) NB(0)`` and ``p(x) = (1 - pi) NB(x)`` for ``x > 0``.

    Parameters
    ----------
    x
        Observed counts (non-negative integers stored in a float tensor).
    mu
        NB mean, ``>= 0``.
    theta
        NB inverse dispersion, ``> 0``.
    zi_logits
        Logits of the dropout probability ``pi``; any real value, including large ``|logits|``.
    eps
        Offset inside the logarithms that keeps ``mu`` near 0 finite.
    lgamma_x1
        Precomputed ``lgamma(x + 1)``; computed when None.

    Returns
    -------
    Tensor
        ``log ZINB(x | mu, theta, pi)`` per element, with the broadcast shape of the inputs.
    """
    log_nb_zero, rest = _nb_parts(x, mu, theta, eps, lgamma_x1)
    # log(1 - pi) = -softplus(logits), log(pi) = logits - softplus(logits): no sigmoid, so no
    # log(0) when |logits| is large
    log_norm = F.softplus(zi_logits)
    case_zero = torch.logaddexp(zi_logits, log_nb_zero) - log_norm
    case_nonzero = log_nb_zero + rest - log_norm
    # both branches are finite everywhere, so torch.where passes finite gradients
    return torch.where(x == 0, case_zero, case_nonzero)


def log_poisson(
    x: Tensor,
    rate: Tensor,
    *,
    eps: float = 1e-8,
    lgamma_x1: Tensor | None = None,
) -> Tensor:
    """Log-probability of counts under a Poisson distribution.

    Parameters
    ----------
    x
        Observed counts (non-negative integers stored in a float tensor).
    rate
        Poisson rate, ``>= 0``.
    eps
        Offset inside the logarithm that keeps ``rate`` near 0 finite.
    lgamma_x1
        Precomputed ``lgamma(x + 1)``; computed when None.

    Returns
    -------
    Tensor
        ``log Poisson(x | rate)`` per element, with the broadcast shape of the inputs.
    """
    if lgamma_x1 is None:
        lgamma_x1 = torch.lgamma(x + 1.0)
    return x * torch.log(rate + eps) - rate - lgamma_x1
