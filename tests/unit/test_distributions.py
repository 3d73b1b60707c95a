"""Count likelihoods against scipy, at edge values, and the counts check."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from src.app.core.data.row_store import check_counts
from src.app.core.model.distributions import (
    log_nb_positive,
    log_poisson,
    log_zinb_positive,
)
from src.app.errors import DataError
from tests.examples import examples

N = 2000


def t64(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


@pytest.fixture
def nb_draws() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts drawn from the NB itself; theta spans both sides of the stirling switch (1e3)."""
    rng = np.random.default_rng(0)
    mu = 10.0 ** rng.uniform(-2, 4, N)
    theta = 10.0 ** rng.uniform(-2, 6, N)
    x = rng.negative_binomial(theta, theta / (theta + mu)).astype(np.float64)
    x[:50] = 0.0
    return x, mu, theta


def scipy_nb(x, mu, theta) -> np.ndarray:
    from scipy import stats  # here, not at collection: scipy.stats costs every worker 0.7 s

    return stats.nbinom.logpmf(x, n=theta, p=theta / (theta + mu))


def test_nb_matches_scipy(nb_draws):
    x, mu, theta = nb_draws
    got = log_nb_positive(t64(x), t64(mu), t64(theta), eps=0.0).numpy()
    np.testing.assert_allclose(got, scipy_nb(x, mu, theta), rtol=1e-6, atol=1e-9)
    # the default eps only nudges the logs
    got_eps = log_nb_positive(t64(x), t64(mu), t64(theta)).numpy()
    np.testing.assert_allclose(got_eps, got, rtol=1e-5, atol=1e-6)


def test_poisson_matches_scipy():
    from scipy import stats

    rng = np.random.default_rng(1)
    rate = 10.0 ** rng.uniform(-3, 5, N)
    x = rng.poisson(rate).astype(np.float64)
    got = log_poisson(t64(x), t64(rate), eps=0.0).numpy()
    np.testing.assert_allclose(got, stats.poisson.logpmf(x, rate), rtol=1e-6, atol=1e-9)


def test_zinb_matches_hand_built_mixture(nb_draws):
    from scipy import stats
    from scipy.special import expit

    x, mu, theta = nb_draws
    logits = np.random.default_rng(2).uniform(-6, 6, N)
    pi = expit(logits)
    p = theta / (theta + mu)
    mixture = pi * (x == 0) + (1 - pi) * stats.nbinom.pmf(x, n=theta, p=p)
    got = log_zinb_positive(t64(x), t64(mu), t64(theta), t64(logits), eps=0.0).numpy()
    np.testing.assert_allclose(got, np.log(mixture), rtol=1e-6, atol=1e-9)


def test_nb_tends_to_poisson_for_huge_theta():
    x = t64([0, 1, 3, 40, 1000])
    mu = t64([0.5, 1.0, 2.5, 38.0, 990.0])
    nb = log_nb_positive(x, mu, torch.full_like(x, 1e12), eps=0.0)
    np.testing.assert_allclose(
        nb.numpy(), log_poisson(x, mu, eps=0.0).numpy(), rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("theta", [1e4, 1e6, 1e8])
def test_float32_agrees_with_float64_for_huge_theta(theta):
    x = t64([0, 1, 5, 100, 10000])
    mu = t64([0.1, 2.0, 4.0, 120.0, 9000.0])
    th = torch.full_like(x, theta)
    ref = log_nb_positive(x, mu, th)
    got = log_nb_positive(x.float(), mu.float(), th.float())
    assert got.dtype == torch.float32
    # the plain lgamma difference is off by ~0.7 at theta=1e6 and ~25 at 1e8 here
    np.testing.assert_allclose(got.double().numpy(), ref.numpy(), rtol=1e-3, atol=1e-3)


EDGE_X = [0.0, 1.0, 1e6]
EDGE_MU = [0.0, 1e-8, 1.0, 1e6]
EDGE_THETA = [1e-6, 1.0, 1e3, 1e8]
EDGE_LOGITS = [-50.0, 0.0, 50.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_values_and_gradients_finite_at_edges(dtype):
    grid = list(itertools.product(EDGE_X, EDGE_MU, EDGE_THETA, EDGE_LOGITS))
    x, mu, theta, logits = (torch.tensor(col, dtype=dtype) for col in zip(*grid, strict=True))
    for t in (mu, theta, logits):
        t.requires_grad_(True)
    outputs = {
        "nb": log_nb_positive(x, mu, theta),
        "zinb": log_zinb_positive(x, mu, theta, logits),
        "poisson": log_poisson(x, mu),
    }
    for name, out in outputs.items():
        assert out.dtype == dtype
        assert torch.isfinite(out).all(), name
        inputs = [mu, theta, logits] if name == "zinb" else [mu, theta] if name == "nb" else [mu]
        grads = torch.autograd.grad(out.sum(), inputs)
        for g in grads:
            assert torch.isfinite(g).all(), name


def test_outputs_broadcast_without_reduction():
    x = torch.arange(4.0).reshape(4, 1)
    mu = torch.tensor([[0.5, 1.0, 2.0]])
    theta = torch.tensor([1.0, 10.0, 100.0])
    logits = torch.tensor([-1.0, 0.0, 1.0])
    assert log_nb_positive(x, mu, theta).shape == (4, 3)
    assert log_zinb_positive(x, mu, theta, logits).shape == (4, 3)
    assert log_poisson(x, mu).shape == (4, 3)


def test_precomputed_lgamma_x1_gives_same_result(nb_draws):
    x, mu, theta = (t64(a) for a in nb_draws)
    logits = torch.zeros_like(x)
    lg = torch.lgamma(x + 1)
    assert torch.equal(log_nb_positive(x, mu, theta, lgamma_x1=lg), log_nb_positive(x, mu, theta))
    assert torch.equal(
        log_zinb_positive(x, mu, theta, logits, lgamma_x1=lg),
        log_zinb_positive(x, mu, theta, logits),
    )
    assert torch.equal(log_poisson(x, mu, lgamma_x1=lg), log_poisson(x, mu))


@pytest.mark.parametrize(
    ("values", "kind", "example"),
    [
        ([0.0, 3.0, -2.0], "negative", "-2.0"),
        ([1.0, 2.5, 4.0], "non-integer", "2.5"),
        ([1.0, float("nan")], "NaN/Inf", "nan"),
        ([float("inf"), 1.0], "NaN/Inf", "inf"),
    ],
)
def test_check_counts_rejects_bad_values(values, kind, example):
    with pytest.raises(DataError, match="count likelihood 'zinb' needs") as info:
        check_counts(torch.tensor(values), "zinb")
    assert kind in str(info.value)
    assert example in str(info.value)


def test_check_counts_rejects_negative_integers():
    with pytest.raises(DataError, match="negative"):
        check_counts(torch.tensor([[1, -3]]), "nb")


@pytest.mark.parametrize(
    "x",
    [
        torch.tensor([[0.0, 1.0], [7.0, 1e6]]),
        torch.tensor([0.0, 2.0], dtype=torch.float64),
        torch.tensor([0, 5, 9]),
        torch.zeros(0, 3),
    ],
)
def test_check_counts_accepts_counts(x):
    check_counts(x, "nb")


@settings(max_examples=examples(200), deadline=None)
@given(
    x=st.integers(0, 100_000),
    mu=st.floats(1e-6, 1e5),
    theta=st.floats(1e-5, 1e7),
)
def test_nb_log_prob_is_finite_and_at_most_zero(x, mu, theta):
    for dtype in (torch.float64, torch.float32):
        lp = log_nb_positive(
            torch.tensor(float(x), dtype=dtype),
            torch.tensor(mu, dtype=dtype),
            torch.tensor(theta, dtype=dtype),
        )
        assert torch.isfinite(lp)
        assert lp.item() <= 0.0
