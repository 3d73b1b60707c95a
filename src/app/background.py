"""One call computed in a forked child process while the caller goes on with its own work, where
the stage has a second core: the evaluate stage lays out the UMAP while it fits the classifiers,
the plot stage draws half of its figures. Both halves are single-threaded Python and numba,
which more BLAS threads do not speed up, so two processes are what a second core can give.

Forked, not spawned: the child starts with the parent's imports (anndata, scikit-learn, umap-learn:
1 to 2.5 s each to import afresh on 2 cores) and its arrays, and sends back only the result.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def _child(send: Any, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    """The forked child: ``fn(*args, **kwargs)`` on one BLAS / OpenMP thread (the parent keeps
    the other core), its result or exception sent back through ``send``."""
    from threadpoolctl import threadpool_limits

    try:
        with threadpool_limits(limits=1):
            outcome = (True, fn(*args, **kwargs))
    except BaseException as exc:  # raised again in the parent
        outcome = (False, exc)
    send.send(outcome)


@contextmanager
def beside(
    fn: Callable[..., Any], /, *args: Any, parallel: bool, **kwargs: Any
) -> Iterator[Callable[[], Any]]:
    """Starts ``fn(*args, **kwargs)`` in a forked child on entry and yields a function that
    returns its result, waiting for the child if it has not finished. Without ``parallel`` (one
    core) or where the platform cannot fork, the call runs in this process when its result is
    first asked for. A child that dies (killed for memory, say) is logged and its call rerun
    here; an exception raised by ``fn`` is raised again by the returned function; leaving the
    block before asking (an error in the caller's own work) stops the child at once."""
    done: list[Any] = []

    def inline() -> Any:
        if not done:
            done.append(fn(*args, **kwargs))
        return done[0]

    if not parallel or not can_fork():
        yield inline
        return
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(send, fn, args, kwargs), daemon=True)
    child.start()
    send.close()

    def result() -> Any:
        if done:
            return done[0]
        try:
            ok, value = receive.recv()
        except EOFError:
            log.warning("the child process computing %s died; computing it here", fn.__name__)
            return inline()
        if not ok:
            raise value
        done.append(value)
        return value

    try:
        yield result
    finally:
        if child.is_alive() and not done:
            child.terminate()
        child.join()
        receive.close()
