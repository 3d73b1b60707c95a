import json
import subprocess
import sys
from pathlib import Path

import pytest

from src.app.cli import main, normalise_argv, parse_args

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        ([], "train"),
        (["--config", "c.yaml"], "train"),
        (["--config", "c.yaml", "eval"], "eval"),
        (["viz", "--output_dir", "x"], "viz"),
        (["--pipeline"], "pipeline"),
        (["--dry_run", "--output_dir", "train"], "train"),
        (["evaluate", "--latent", "l.npy"], "evaluate"),
    ],
)
def test_command_selection(argv, command):
    args = parse_args(argv)
    assert args.command == command


def test_options_before_and_after_command_agree():
    a = parse_args(["--config", "c.yaml", "--output_dir", "o", "eval"])
    b = parse_args(["eval", "--config", "c.yaml", "--output_dir", "o"])
    assert vars(a) == vars(b)
    assert normalise_argv(["--output_dir", "eval"]) == ["train", "--output_dir", "eval"]


def test_unknown_option_exits_with_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(["--nope"])
    assert exc.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_expected_errors_print_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("APP__TRAIN__EPOCS", "3")
    assert main(["--config", str(ROOT / "config/default.yaml"), "eval"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "train.epocs" in err
    assert "Traceback" not in err


def test_missing_machine_profile_says_how_to_create(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("APP__PATHS__MACHINE_PROFILE", str(tmp_path / "none.yml"))
    assert (
        main(
            ["--config", str(ROOT / "config/default.yaml"), "--output_dir", str(tmp_path), "train"]
        )
        == 2
    )
    assert "scripts/generate_config.sh" in capsys.readouterr().err


def test_dry_run_smoke(tmp_path, monkeypatch):
    """``--dry_run`` runs the whole chain on synthetic data (in-process to skip start-up imports;
    the module entry point itself is checked by ``test_module_entry_point``)."""
    monkeypatch.chdir(tmp_path)  # no config.yml here: the dry run falls back to the example
    out = tmp_path / "run"
    assert (
        main(["--config", str(ROOT / "config/default.yaml"), "--dry_run", "--output_dir", str(out)])
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["f1_macro"] <= 1
    assert set(metrics["labels"]) == {"cell_type_coarse", "cell_type"}
    for name in ("latent.npy", "model/weights.safetensors", "figures/umap.png", "config.used.yaml"):
        assert (out / name).exists(), name


def test_module_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "src.app.cli", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("train", "eval", "viz", "pipeline", "download", "embed", "plot"):
        assert command in proc.stdout
