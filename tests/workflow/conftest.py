"""Workflow tests run Snakemake in subprocesses: each run below is a session fixture, run once in
the foreground when a test asks for it. All of them are behind the ``slow`` marker
(``uv run pytest -m slow``, run by .ci/run after the fast suite)."""

from __future__ import annotations

import shutil

import pytest

from tests.workflow.helpers import (
    MATRIX_CHANGES,
    ROOT,
    STAGES,
    e2e_steps,
    fresh_steps,
    matrix_steps,
    planned_jobs,
)

__all__ = ["MATRIX_CHANGES", "ROOT", "STAGES", "planned_jobs"]


def _run(steps):
    workdir, results = steps()
    yield workdir, results
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def e2e_run():
    """(folder, {"again": dry run, "report": report}) of a real tiny run."""
    yield from _run(e2e_steps)


@pytest.fixture(scope="session")
def rerun_matrix():
    """(folder, dry run) of the rerun matrix."""
    yield from _run(matrix_steps)


@pytest.fixture(scope="session")
def fresh_folder():
    """(folder, {"plan": result}) of a fresh tiny folder."""
    yield from _run(fresh_steps)
