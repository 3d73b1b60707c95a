"""Bad config, machine profile and output folders fail before any work: one ``error:`` line,
exit status 2, no output created or changed; files are never unpickled and writes are atomic."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from src.app.cli import main
from tests.conftest import profile_dict
from tests.unit.conftest import fails

CONFIG_CASES = {
    "unknown key": ({"APP__TRAIN__EPOCS": "3"}, r"config key 'train\.epocs': unknown key"),
    "wrong type": ({"APP__TRAIN__LR": "fast"}, r"'train\.lr': must be a number, got 'fast'"),
    "negative epochs": ({"APP__TRAIN__EPOCHS": "-1"}, r"'train\.epochs': must be >= 1"),
    "latent_dim 0": ({"APP__MODEL__LATENT_DIM": "0"}, r"'model\.latent_dim': must be >= 1"),
    "dropout 1": ({"APP__MODEL__DROPOUT": "1.0"}, r"'model\.dropout': must be in \[0, 1\)"),
    "override not YAML": ({"APP__TRAIN__EPOCHS": "[1"}, r"APP__TRAIN__EPOCHS: value is not valid"),
    "run_id escapes": ({"APP__RUN_ID": "../x"}, r"'run_id': '\.\./x' must use only"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_bad_config_fails_before_any_output(case, work, capsys):
    env, match = CONFIG_CASES[case]
    fails(work, ["train"], match, capsys, env)


PROFILE_CASES = {
    "not YAML": ("os_name: [linux\n", r"config\.yml is not valid YAML.*generate_config\.sh"),
    "not a mapping": ("- 1\n", r"must hold a mapping.*generate_config\.sh"),
    "a key missing": (None, r"lacks key\(s\) gpu_vram_gb; regenerate it"),
    "a value out of range": ("max_ram_usage_gb: -1", r"'max_ram_usage_gb': value -1"),
}


@pytest.mark.parametrize("case", PROFILE_CASES)
def test_bad_machine_profile_says_how_to_regenerate(case, work, capsys):
    text, match = PROFILE_CASES[case]
    profile = profile_dict()
    if text is None:
        del profile["gpu_vram_gb"]
    elif text.startswith("max_ram"):
        profile["max_ram_usage_gb"] = -1
    if text is None or text.startswith("max_ram"):
        text = yaml.safe_dump(profile)
    (work / "config.yml").write_text(text)
    fails(work, ["train", "--output_dir", "out"], match, capsys)


def test_unwritable_output_fails_before_any_work(work, capsys, monkeypatch):
    """Nothing is downloaded, read or created when an output folder cannot be written."""
    env = {"APP__DATA__SOURCE": str(work / "missing.h5ad")}
    fails(work, ["train", "--output_dir", "out/raw.h5ad/run"], r"out/raw\.h5ad is not a folder", capsys, env)  # fmt: skip
    writable = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p).name != "out" and writable(p, mode))
    fails(work, ["download", "--output", "out/new.h5ad"], r"folder .*out is not writable", capsys, env)  # fmt: skip
    assert not (work / "resources").exists()


def test_nothing_unpickles_user_files():
    """Checkpoints are safetensors + JSON, arrays are read with allow_pickle=False: no code path
    can run a pickle from a file."""
    root = Path(__file__).resolve().parents[2] / "src"
    for path in root.rglob("*.py"):
        text = path.read_text()
        for needle in ("import pickle", "torch.load(", "allow_pickle=True", "joblib.load"):
            assert needle not in text, f"{path}: {needle}"


def test_atomic_writes_keep_the_old_file_on_failure_and_usual_permissions(tmp_path):
    from src.app.io_utils import atomic_path, atomic_write_text

    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0o600

    def interrupted() -> None:
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        interrupted()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_debug_shows_the_traceback(work, monkeypatch):
    from src.app.errors import ConfigError

    monkeypatch.setenv("APP__TRAIN__EPOCHS", "-1")
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        main(["--config", str(work / "run.yaml"), "--debug", "train"])
