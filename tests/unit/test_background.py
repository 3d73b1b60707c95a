import os
import time

import numpy as np
import pytest

from src.app.background import beside, can_fork


def _pid_and_sum(values: np.ndarray, *, scale: float) -> tuple[int, float]:
    return os.getpid(), float(values.sum() * scale)


def _fails(message: str) -> None:
    raise ValueError(message)


def _dies_in_a_child(parent: int) -> str:
    if os.getpid() != parent:
        os._exit(3)  # as a child killed for memory would end
    return "computed here"


@pytest.mark.parametrize("parallel", [False, True])
def test_beside_returns_the_call_result_once(parallel):
    values = np.arange(10.0)
    with beside(_pid_and_sum, values, scale=2.0, parallel=parallel) as result:
        pid, total = result()
        assert result() == (pid, total)  # asked twice: the same answer, computed once
    assert total == 90.0
    assert (pid != os.getpid()) == (parallel and can_fork())


def test_beside_raises_the_child_exception():
    with (
        pytest.raises(ValueError, match="no such key"),
        beside(_fails, "no such key", parallel=True) as result,
    ):
        result()


@pytest.mark.skipif(not can_fork(), reason="needs fork")
def test_a_child_that_dies_is_computed_here(caplog):
    with beside(_dies_in_a_child, os.getpid(), parallel=True) as result:
        assert result() == "computed here"
    assert "died" in caplog.text


@pytest.mark.skipif(not can_fork(), reason="needs fork")
def test_an_error_in_the_callers_work_stops_the_child_at_once():
    start = time.perf_counter()
    with (
        pytest.raises(RuntimeError, match="the caller failed"),
        beside(time.sleep, 30, parallel=True),
    ):
        raise RuntimeError("the caller failed")
    assert time.perf_counter() - start < 10  # not the child's 30 s
