"""Workflow tests run Snakemake in subprocesses, all started in background threads (see
background.py) before collection when the whole suite runs (tests/conftest.py), else as soon as
collection ends, so that they overlap each other and the in-process tests; their fixtures wait."""

from __future__ import annotations

import shutil

import pytest

from tests.workflow.background import (
    BACKGROUND,
    BACKGROUND_KEY,
    MATRIX_CHANGES,
    ROOT,
    STAGES,
    Background,
    planned_jobs,
    start_background,
)

__all__ = ["MATRIX_CHANGES", "ROOT", "STAGES", "planned_jobs"]


def pytest_collection_finish(session: pytest.Session) -> None:
    # tests/conftest.py starts them all before collection when the whole suite runs
    wanted = {name for item in session.items for name in getattr(item, "fixturenames", ())}
    start_background(session.config, wanted)


def _waited(request: pytest.FixtureRequest):
    """The finished background job of the requesting fixture: (working folder, results)."""
    name = request.fixturename
    started = request.config.stash.get(BACKGROUND_KEY, {})
    workdir, results = (started.get(name) or Background(BACKGROUND[name])).result()
    yield workdir, results
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def e2e_run(request: pytest.FixtureRequest):
    """(folder, {"again": dry run, "report": report}) of a real tiny run."""
    yield from _waited(request)


@pytest.fixture(scope="session")
def rerun_matrix(request: pytest.FixtureRequest):
    """(folder, dry run) of the rerun matrix."""
    yield from _waited(request)


@pytest.fixture(scope="session")
def fresh_folder(request: pytest.FixtureRequest):
    """(folder, {"plan": result}) of a fresh tiny folder."""
    yield from _waited(request)
