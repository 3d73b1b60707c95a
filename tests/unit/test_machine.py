import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from src.app.config import TrainConfig
from src.app.errors import ConfigError
from src.app.machine import (
    GENERATE_HINT,
    default_batch_size,
    load_machine_profile,
    profile_from_dict,
    resolve_runtime,
)
from tests.conftest import profile_dict

ROOT = Path(__file__).resolve().parents[2]


def resolve(train=None, *, cuda=False, **profile):
    return resolve_runtime(
        profile_from_dict(profile_dict(**profile)), train or TrainConfig(), cuda_available=cuda
    )


def test_cpu_without_gpu():
    rt = resolve(gpu_vram_gb=0.0, cuda=True)
    assert rt.device == "cpu"
    assert not rt.autocast


def test_cuda_when_vram_and_available():
    assert resolve(gpu_vram_gb=16.0, cuda=True).device == "cuda"


def test_cpu_when_vram_but_cuda_unavailable():
    assert resolve(gpu_vram_gb=16.0, cuda=False).device == "cpu"


def test_explicit_cuda_without_cuda_fails():
    with pytest.raises(ConfigError, match=r"train\.device"):
        resolve(TrainConfig(device="cuda"), gpu_vram_gb=16.0, cuda=False)


@pytest.mark.parametrize(("vram", "size"), [(0, 128), (4, 128), (6, 256), (8, 256), (12, 512)])
def test_batch_size_from_vram(vram, size):
    assert default_batch_size(vram) == size
    assert resolve(gpu_vram_gb=float(vram), batch_size=None).batch_size == size


def test_batch_size_precedence():
    assert resolve(batch_size=300, gpu_vram_gb=16.0).batch_size == 300
    assert resolve(TrainConfig(batch_size=64), batch_size=300).batch_size == 64


@pytest.mark.parametrize(
    ("vram", "fraction", "expected"),
    [(16.0, 0.5, True), (8.0, 0.9, True), (8.0, 0.5, False), (12.0, 0.1, True)],
)
def test_autocast_rule(vram, fraction, expected):
    rt = resolve(gpu_vram_gb=vram, gpu_memory_fraction=fraction, cuda=True)
    assert rt.autocast is expected


def test_threads_workers_lr_epochs():
    rt = resolve(annotation_threads=12, learning_rate=0.01, max_epochs=7)
    assert (rt.threads, rt.loader_workers, rt.lr, rt.epochs) == (12, 8, 0.01, 7)
    rt = resolve(TrainConfig(lr=0.5, epochs=2), annotation_threads=1)
    assert (rt.threads, rt.loader_workers, rt.lr, rt.epochs) == (1, 1, 0.5, 2)


def test_missing_profile_says_how_to_create(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_machine_profile(tmp_path / "config.yml")
    assert GENERATE_HINT in str(err.value)


def test_missing_keys_are_named():
    data = profile_dict()
    del data["gpu_vram_gb"]
    with pytest.raises(ConfigError, match="gpu_vram_gb"):
        profile_from_dict(data)


@pytest.mark.parametrize(
    ("key", "value"),
    [("annotation_threads", 0), ("gpu_memory_fraction", 1.5), ("compression_type", "zip")],
)
def test_bad_profile_values(key, value):
    with pytest.raises(ConfigError, match=key):
        profile_from_dict(profile_dict(**{key: value}))


def test_generate_config_script_writes_every_key(tmp_path):
    out = tmp_path / "config.yml"
    # the interpreter under the venv (no torch) keeps the script fast: the venv's python3, first on
    # uv run's PATH, would spend seconds importing torch; it then records pytorch_version "none"
    base = Path(sys.base_prefix) / "bin" / "python3"
    env = {**os.environ, "PYTHON": str(base if base.exists() else sys.executable)}
    subprocess.run(
        ["bash", str(ROOT / "scripts/generate_config.sh"), str(out)], check=True, env=env
    )
    data = yaml.safe_load(out.read_text())
    profile = profile_from_dict(data)
    assert data.keys() == profile_dict().keys()
    assert profile.logical_cores >= 1
    assert profile.total_ram_gb > 0
