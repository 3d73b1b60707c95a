"""Adam, written out: the computation of ``torch.optim.Adam`` (L2 weight decay added to the
gradient, bias-corrected moments, eps outside the square root, amsgrad off) as a handful of
``torch._foreach`` calls. Why not torch's own: its ``step`` imports torch's compiler
(``torch._dynamo``, about 1.3 s on 2 CPU cores) in every process, only to mark a graph break for
``torch.compile``, which this model never uses; the train stage and every test that trains pay it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


class Adam:
    """Adam (Kingma and Ba 2015) over ``params``; ``zero_grad`` and ``step`` as in torch. One
    step count for all parameters (torch keeps one per parameter): the same wherever every
    parameter gets a gradient at every step, as in this model."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        *,
        lr: float,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient. O(parameters)."""
        have = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not have:
            return
        params = [self.params[i] for i in have]
        grads = [self.params[i].grad for i in have]
        exp_avg = [self.exp_avg[i] for i in have]
        exp_avg_sq = [self.exp_avg_sq[i] for i in have]
        beta1, beta2 = self.betas
        self.steps += 1
        if self.weight_decay:
            grads = torch._foreach_add(grads, params, alpha=self.weight_decay)
        torch._foreach_lerp_(exp_avg, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sq, beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, 1 - beta2)
        bias1 = 1 - beta1**self.steps
        bias2 = 1 - beta2**self.steps
        denom = torch._foreach_sqrt(exp_avg_sq)
        torch._foreach_div_(denom, math.sqrt(bias2))
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(params, exp_avg, denom, value=-self.lr / bias1)
