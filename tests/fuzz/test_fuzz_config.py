"""Hypothesis on the boundaries: config loader, env overrides, CLI argument parsing."""

import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from src.app.cli_args import COMMANDS, parse_args
from src.app.config import Config, apply_env_overrides, check_safe_name, config_from_dict
from src.app.errors import ConfigError
from tests.examples import examples

SECTIONS = ["paths", "data", "preprocess", "model", "train", "eval", "viz"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(-3, 300), max_size=3),
)
keys = st.sampled_from(
    [
        "epochs",
        "lr",
        "latent_dim",
        "hidden_dims",
        "dropout",
        "source",
        "label_keys",
        "seed",
        "bogus",
    ]
)
configs = st.dictionaries(
    st.sampled_from([*SECTIONS, "seed", "run_id", "other"]),
    st.one_of(scalars, st.dictionaries(keys, scalars, max_size=4)),
    max_size=4,
)


@settings(max_examples=examples(150), deadline=None)
@given(configs)
def test_loader_accepts_or_names_a_key(data):
    try:
        cfg = config_from_dict(data)
    except ConfigError as exc:
        assert "config key '" in str(exc)
    else:
        assert isinstance(cfg, Config)


env_names = st.lists(
    st.sampled_from([*SECTIONS, "epochs", "seed", "x", ""]), min_size=1, max_size=3
)


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        env_names.map(lambda p: "APP__" + "__".join(p).upper()), st.text(max_size=10), max_size=3
    )
)
def test_env_overrides_never_crash(environ):
    try:
        data = apply_env_overrides({}, environ)
        config_from_dict(data)
    except ConfigError as exc:
        assert str(exc)


@settings(max_examples=examples(80), deadline=None)
@given(st.integers(1, 10_000))
def test_valid_epochs_round_trip_through_env(epochs):
    data = apply_env_overrides({}, {"APP__TRAIN__EPOCHS": str(epochs)})
    assert config_from_dict(data).train.epochs == epochs


@settings(max_examples=examples(200), deadline=None)
@given(st.text(alphabet=string.printable, max_size=12))
def test_safe_names_never_escape(name):
    try:
        check_safe_name(name, "run_id")
    except ConfigError:
        return
    assert "/" not in name
    assert "\\" not in name
    assert name not in {".", ".."}
    assert yaml.safe_load(yaml.safe_dump(name)) == name


options = st.lists(
    st.one_of(
        st.sampled_from(["--dry_run", "--pipeline", "--debug", *COMMANDS]),
        st.tuples(
            st.sampled_from(["--config", "--output_dir", "--input", "--latent"]),
            st.text(string.ascii_letters, min_size=1, max_size=5),
        ),
    ),
    max_size=5,
)


@settings(max_examples=examples(100), deadline=None)
@given(options)
def test_cli_parsing_is_total(items):
    argv = []
    for item in items:
        argv += list(item) if isinstance(item, tuple) else [item]
    try:
        args = parse_args(argv)
    except SystemExit as exc:
        assert exc.code == 2  # argparse usage error, e.g. two commands
        return
    assert args.command in COMMANDS
    if "--pipeline" in argv:
        assert args.command == "pipeline"


@pytest.mark.parametrize("name", ["..", ".", "a/b", "", "x y", "../../etc"])
def test_unsafe_names(name):
    with pytest.raises(ConfigError):
        check_safe_name(name, "run_id")
