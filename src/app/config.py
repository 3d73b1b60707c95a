"""Run configuration: the tree of frozen dataclasses of ``src.app.sections`` built from YAML plus
environment overrides. The same loader serves the CLI and the Snakefile.
Environment overrides take the form ``APP__SECTION__KEY=value`` (value parsed as YAML).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from src.app.config_rules import (
    BASELINE_METHODS,
    COUNT_LIKELIHOODS,
    DECODERS,
    DEVICES,
    LIKELIHOODS,
    QC_RULES,
    SOURCE_PBMC3K,
    _require,
    check_safe_name,
)
from src.app.errors import ConfigError
from src.app.sections import (
    AnnotationConfig,
    Config,
    DataConfig,
    ModelConfig,
    PathsConfig,
    PreprocessConfig,
    TrainConfig,
)
from src.app.sections_results import BaselineConfig, EvalConfig, MapConfig, VizConfig

ENV_PREFIX = "APP__"
# libyaml's C parser and emitter where pyyaml was built with them (pyyaml's wheels are): about 10x
# faster than the pure-Python ones; every stage reads the run config and the machine profile
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


__all__ = [
    "BASELINE_METHODS",
    "COUNT_LIKELIHOODS",
    "DECODERS",
    "DEVICES",
    "ENV_PREFIX",
    "LIKELIHOODS",
    "QC_RULES",
    "SOURCE_PBMC3K",
    "AnnotationConfig",
    "BaselineConfig",
    "Config",
    "DataConfig",
    "EvalConfig",
    "MapConfig",
    "ModelConfig",
    "PathsConfig",
    "PreprocessConfig",
    "TrainConfig",
    "VizConfig",
    "apply_env_overrides",
    "check_safe_name",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "load_yaml",
    "read_yaml",
    "write_config",
]


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` of ``text``, with libyaml's parser where available."""
    return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader


# --- building dataclasses from plain mappings --------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin in (tuple, dict):
        return _coerce_collection(value, tp, key)
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        _require(ok, key, f"must be a number, got {value!r}")
        return float(value)
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        _require(ok, key, f"must be an integer, got {value!r}")
        return value
    if tp in (str, bool):
        _require(isinstance(value, tp), key, f"must be a {_type_name(tp)}, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} for '{key}'")  # pragma: no cover


def _coerce_collection(value: Any, tp: Any, key: str) -> tuple | dict:
    """A ``tuple[T, ...]`` from a list, or a ``dict[K, V]`` from a mapping."""
    if typing.get_origin(tp) is tuple:
        _require(isinstance(value, list | tuple), key, f"must be a list, got {value!r}")
        item_tp = typing.get_args(tp)[0]
        return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    _require(isinstance(value, Mapping), key, f"must be a mapping, got {value!r}")
    key_tp, value_tp = typing.get_args(tp)
    return {
        _coerce(k, key_tp, f"{key}.{k}"): _coerce(v, value_tp, f"{key}.{k}")
        for k, v in value.items()
    }


def _build(cls: type, data: Any, prefix: str = "") -> Any:
    where = prefix.rstrip(".") or "<root>"
    if data is None:
        data = {}
    _require(isinstance(data, Mapping), where, f"must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    _require(not unknown, f"{prefix}{unknown[0]}" if unknown else where, "unknown key")
    kwargs = {}
    for name in names & set(data):
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, data[name], f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(data[name], tp, f"{prefix}{name}")
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Build and validate a :class:`Config`; raises :class:`ConfigError` naming the bad key."""
    return _build(Config, data)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) suitable for YAML or JSON."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(cfg))


def apply_env_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Return a copy of ``data`` with every ``APP__A__B=value`` applied at ``data[a][b]``."""
    out = load_yaml(yaml.dump(data, Dumper=_DUMPER)) or {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        _require(all(parts), name, "malformed override name; use APP__SECTION__KEY")
        try:
            value = load_yaml(environ[name])
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"environment override {name}: value is not valid YAML: {exc}"
            ) from exc
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            _require(isinstance(child, dict), name, f"'{part}' is not a section")
            node = child
        node[parts[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Load ``path`` (or the built-in defaults), apply ``APP__`` overrides from ``environ``."""
    data = read_yaml(path) if path is not None else {}
    data = apply_env_overrides(data, os.environ if environ is None else environ)
    return config_from_dict(data)


def write_config(cfg: Config, path: str | Path) -> None:
    from src.app.io_utils import atomic_write_text

    text = "# resolved config of this run (defaults, file and environment overrides)\n"
    text += yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    atomic_write_text(path, text)
