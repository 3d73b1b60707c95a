from pathlib import Path

import pytest
import yaml

from src.app.config import (
    Config,
    ConfigError,
    apply_env_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    write_config,
)

ROOT = Path(__file__).resolve().parents[2]


def test_default_yaml_matches_dataclass_defaults():
    cfg = load_config(ROOT / "config/default.yaml", environ={})
    assert cfg.run_id == "pbmc3k"
    assert cfg.data.source == "pbmc3k"
    assert cfg.eval.label_keys == ("cell_type_coarse", "cell_type")
    assert cfg.eval.n_neighbors == 15
    assert cfg.preprocess.n_top_genes == 2000


def test_env_overrides_parse_yaml_values():
    env = {
        "APP__DATA__SOURCE": "some/file.h5ad",
        "APP__RUN_ID": "run2",
        "APP__TRAIN__EPOCHS": "5",
        "APP__MODEL__HIDDEN_DIMS": "[64, 32]",
        "OTHER": "ignored",
    }
    cfg = load_config(ROOT / "config/default.yaml", environ=env)
    assert cfg.data.source == "some/file.h5ad"
    assert cfg.run_id == "run2"
    assert cfg.train.epochs == 5
    assert cfg.model.hidden_dims == (64, 32)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"train": {"epocs": 3}}, "train.epocs"),
        ({"bogus": 1}, "bogus"),
        ({"train": {"epochs": "many"}}, "train.epochs"),
        ({"train": {"epochs": -1}}, "train.epochs"),
        ({"train": {"epochs": True}}, "train.epochs"),
        ({"model": {"latent_dim": 0}}, "model.latent_dim"),
        ({"model": {"dropout": 1.0}}, "model.dropout"),
        ({"model": {"hidden_dims": 128}}, "model.hidden_dims"),
        ({"model": {"hidden_dims": [128, "x"]}}, "model.hidden_dims[1]"),
        ({"model": {"likelihood": "cauchy"}}, "model.likelihood"),
        ({"model": {"decoder": "deep"}}, "model.decoder"),
        ({"model": {"standardize": "yes"}}, "model.standardize"),
        ({"annotation": {"pseudo_label_neighbors": 0}}, "annotation.pseudo_label_neighbors"),
        ({"annotation": {"pseudo_label_start": 1.0}}, "annotation.pseudo_label_start"),
        ({"annotation": {"pseudo_label_every": 0}}, "annotation.pseudo_label_every"),
        ({"eval": {"propagation_neighbors": 0}}, "eval.propagation_neighbors"),
        ({"run_id": "../escape"}, "run_id"),
        ({"run_id": "/abs"}, "run_id"),
        ({"eval": "knn"}, "eval"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_bad_values_name_the_key(data, key):
    with pytest.raises(ConfigError, match=f"'{key}'".replace("[", r"\[").replace("]", r"\]")):
        config_from_dict(data)


def test_unknown_env_override_names_the_key():
    with pytest.raises(ConfigError, match=r"train\.epocs"):
        load_config(None, environ={"APP__TRAIN__EPOCS": "3"})


def test_unparsable_env_override_names_the_variable():
    with pytest.raises(ConfigError, match="APP__TRAIN__EPOCHS"):
        load_config(None, environ={"APP__TRAIN__EPOCHS": "[1, 2"})


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, environ={})
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar, environ={})


def test_round_trip_through_written_config(tmp_path):
    cfg = config_from_dict({"train": {"epochs": 7}, "model": {"hidden_dims": [16, 8]}})
    out = tmp_path / "run" / "config.used.yaml"
    write_config(cfg, out)
    again = load_config(out, environ={})
    assert again == cfg
    assert config_to_dict(again)["model"]["hidden_dims"] == [16, 8]


def test_overrides_do_not_mutate_input():
    data = {"train": {"epochs": 2}}
    out = apply_env_overrides(data, {"APP__TRAIN__EPOCHS": "4"})
    assert data == {"train": {"epochs": 2}}
    assert out["train"]["epochs"] == 4
    assert isinstance(config_from_dict(out), Config)


def test_default_yaml_has_every_key():
    on_disk = yaml.safe_load((ROOT / "config/default.yaml").read_text())
    assert on_disk.keys() == config_to_dict(Config()).keys()
    for section, values in config_to_dict(Config()).items():
        if isinstance(values, dict):
            assert set(on_disk[section]) == set(values), section
