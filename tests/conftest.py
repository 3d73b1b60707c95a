"""Shared fixtures: small synthetic counts, a CPU machine profile, and run configs."""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from pathlib import Path

import pytest
import yaml

from src.app.config import Config, config_from_dict, load_yaml
from src.app.machine import MachineProfile, Runtime, profile_from_dict

ROOT = Path(__file__).resolve().parents[1]

# one thread per test process: small synthetic data gains nothing from more, and two processes
# (a test and a subprocess it starts) share two cores; nothing above loads BLAS threads yet
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """An xdist worker leaves at once when its session ends.

    By then it has sent every report to the controller, and nothing it does later reaches the
    controller: pytest's last garbage collection (looking for unraisable exceptions to warn
    about), execnet's wait for the controller and tearing down torch's, numba's and scanpy's
    modules cost about 0.7 s of the suite's wall time on 2 cores, which the controller spends
    waiting. The controller itself unconfigures and exits normally.
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


@functools.cache
def _profile_template() -> str:
    return (ROOT / "config.yml.example").read_text()


def profile_dict(**changes) -> dict:
    data = load_yaml(_profile_template())
    data.update(changes)
    return data


@pytest.fixture
def cpu_profile() -> MachineProfile:
    return profile_from_dict(profile_dict(annotation_threads=1))


@pytest.fixture
def profile_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(profile_dict(annotation_threads=1)))
    return path


@pytest.fixture
def runtime() -> Runtime:
    return Runtime(
        device="cpu",
        threads=1,
        loader_workers=1,
        batch_size=64,
        lr=1e-3,
        epochs=3,
        autocast=False,
        max_ram_gb=4.0,
        gpu_memory_fraction=0.9,
    )


def small_config(tmp_path: Path, **sections) -> Config:
    """A config for fast runs on the synthetic data; ``sections`` update single sections."""
    data = {
        "run_id": "test",
        "paths": {
            "resources": str(tmp_path / "resources"),
            "results": str(tmp_path / "results"),
            "logs": str(tmp_path / "logs"),
            "machine_profile": str(tmp_path / "config.yml"),
        },
        "data": {"labels": None},
        "preprocess": {"n_top_genes": 200},
        "model": {"latent_dim": 4, "hidden_dims": [32]},
        "train": {"epochs": 3, "batch_size": 64},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return config_from_dict(data)


@pytest.fixture(scope="session")
def raw_adata():
    from src.app.core.data.synthetic import synthetic_counts

    return synthetic_counts(n_cells=300, n_genes=600, seed=1)


@pytest.fixture(scope="session")
def pre_adata(raw_adata):
    from src.app.config import PreprocessConfig
    from src.app.core.data.preprocess import preprocess

    return preprocess(raw_adata, PreprocessConfig(n_top_genes=200), seed=0)


def replace(obj, **changes):
    return dataclasses.replace(obj, **changes)
