"""JSON schema of the run config, generated from the dataclasses of :mod:`src.app.config`.

The workflow validates every run config against ``workflow/schemas/config.schema.yaml``; that file
is this module's output, so the dataclasses stay the one source of truth. After adding or changing
a config key, regenerate it:

    python -m src.app.schema > workflow/schemas/config.schema.yaml

The schema checks names, types, choices and defaults (``additionalProperties: false``: a misspelt
key fails); value ranges stay with each dataclass's ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from typing import Any

import yaml

from src.app.config import (
    BASELINE_METHODS,
    DECODERS,
    DEVICES,
    LIKELIHOODS,
    QC_RULES,
    Config,
    config_to_dict,
)

REGENERATE = "python -m src.app.schema > workflow/schemas/config.schema.yaml"
# keys whose value is one of a fixed set, by dotted key
CHOICES: dict[str, tuple[str, ...]] = {
    "model.likelihood": LIKELIHOODS,
    "train.device": DEVICES,
    "baseline.method": BASELINE_METHODS,
    "preprocess.qc": QC_RULES,
    "model.decoder": DECODERS,
}
_SCALARS = {int: "integer", float: "number", str: "string", bool: "boolean"}


def type_schema(tp: Any, key: str) -> dict[str, Any]:
    """JSON schema of one annotation: scalars, ``X | None``, ``tuple[X, ...]`` and
    ``dict[str, X]``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        schema = type_schema(inner[0], key)
        if type(None) in typing.get_args(tp):
            schema["type"] = [schema["type"], "null"]
            if "enum" in schema:
                schema["enum"] = [*schema["enum"], None]
        return schema
    if origin is tuple:
        return {"type": "array", "items": type_schema(typing.get_args(tp)[0], f"{key}[]")}
    if origin is dict:
        values = type_schema(typing.get_args(tp)[1], f"{key}.*")
        return {"type": "object", "additionalProperties": values}
    if tp in _SCALARS:
        schema: dict[str, Any] = {"type": _SCALARS[tp]}
        if key in CHOICES:
            schema["enum"] = list(CHOICES[key])
        return schema
    raise TypeError(f"no JSON schema for the annotation {tp!r} of '{key}'")


def dataclass_schema(cls: type, defaults: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Object schema of a config dataclass: every field, its default, no other keys."""
    hints = typing.get_type_hints(cls)
    properties = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            # an absent section is an empty one; validation then fills its keys' defaults
            properties[f.name] = {
                **dataclass_schema(tp, defaults[f.name], f"{key}."),
                "default": {},
            }
        else:
            properties[f.name] = {**type_schema(tp, key), "default": defaults[f.name]}
    return {"type": "object", "properties": properties, "additionalProperties": False}


def config_schema() -> dict[str, Any]:
    """The run config's JSON schema (draft 2020-12)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "cellvae run config",
        "description": f"generated from src/app/config.py; regenerate: {REGENERATE}",
        **dataclass_schema(Config, config_to_dict(Config())),
    }


def render() -> str:
    header = f"# generated from the dataclasses of src/app/config.py; do not edit. Regenerate:\n#   {REGENERATE}\n"
    return header + yaml.safe_dump(config_schema(), sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render())
