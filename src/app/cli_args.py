"""Command line: ``python -m src.app.cli [command] [options]``.

User commands: ``train`` (default: data source -> trained model and latent), ``eval``
(metrics.json and annotated.h5ad), ``viz`` (the figures), ``pipeline`` (train -> eval -> viz).
Stage commands with explicit paths, one per Snakemake rule: ``download``, ``preprocess``,
``train --input``, ``embed``, ``evaluate``, ``plot``, ``map``, ``write-config``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

USER_COMMANDS = ("train", "eval", "viz", "pipeline")
STAGE_COMMANDS = (
    "download",
    "preprocess",
    "embed",
    "evaluate",
    "plot",
    "map",
    "write-config",
)
COMMANDS = USER_COMMANDS + STAGE_COMMANDS
DEFAULT_CONFIG = "config/default.yaml"
VALUE_OPTIONS = {
    "--config",
    "--output_dir",
    "--input",
    "--output",
    "--model_dir",
    "--latent",
    "--embedded",
    "--metrics",
    "--annotated",
    "--reference",
    "--reference_raw",
}


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=DEFAULT_CONFIG, help="run config YAML")
    common.add_argument("--output_dir", help="run folder (default: results/<run_id>)")
    common.add_argument(
        "--dry_run",
        action="store_true",
        help="run the whole chain on a tiny synthetic data set for one epoch",
    )
    common.add_argument("--pipeline", action="store_true", help="same as the pipeline command")
    common.add_argument("--debug", action="store_true", help="show tracebacks for errors")

    parser = argparse.ArgumentParser(prog="python -m src.app.cli", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    helps = {
        "train": "train the model (from data.source, or a preprocessed --input)",
        "eval": "annotation metrics and annotated.h5ad (UMAP, predicted labels) of the run",
        "viz": "the figures of the run",
        "pipeline": "train -> eval -> viz",
        "download": "stage: raw counts of data.source -> h5ad",
        "preprocess": "stage: raw h5ad -> preprocessed h5ad",
        "embed": "stage: checkpoint + preprocessed h5ad -> latent",
        "evaluate": "stage: preprocessed + embedded h5ad -> metrics.json and annotated.h5ad",
        "plot": "stage: annotated.h5ad + metrics.json + training history -> figures folder",
        "map": "annotate a query (--input raw counts) with a trained run's --model_dir",
        "write-config": "stage: write the resolved config to --output",
    }
    for name in COMMANDS:
        p = sub.add_parser(name, parents=[common], help=helps[name])
        p.add_argument("--input", help="input file (stage commands)")
        p.add_argument("--output", help="output file (stage commands)")
        p.add_argument("--model_dir", help="checkpoint folder")
        p.add_argument("--latent", help="latent .npy (embed)")
        p.add_argument("--embedded", help="the embed stage's h5ad (evaluate)")
        p.add_argument("--metrics", help="metrics.json (plot)")
        p.add_argument("--annotated", help="annotated.h5ad (evaluate)")
        p.add_argument("--reference", help="the run's preprocessed.h5ad (map)")
        p.add_argument("--reference_raw", help="the run's raw counts, for a refit (map)")
    return parser


def normalise_argv(argv: Sequence[str]) -> list[str]:
    """Move the command to the front (so options may come first); default to ``train``."""
    argv = list(argv)
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg in VALUE_OPTIONS:
            skip = True
        elif arg in COMMANDS or arg in ("-h", "--help"):
            if arg in COMMANDS:
                return [arg, *argv[:i], *argv[i + 1 :]]
            break
    if "-h" in argv or "--help" in argv:
        return argv if any(a in COMMANDS for a in argv) else ["--help"]
    return ["train", *argv]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(normalise_argv(sys.argv[1:] if argv is None else argv))
    if args.pipeline:
        args.command = "pipeline"
    return args
