"""Command line: ``python -m src.app.cli [command] [options]``; the commands and their options
are declared in ``cli_args.py``, and this module runs them (config, machine profile, locks, the
stage's outputs written all or nothing)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from src.app.cli_args import USER_COMMANDS, parse_args
from src.app.config import load_config, read_yaml, write_config
from src.app.errors import AppError
from src.app.io_utils import check_outputs, hdf5_half_closed, quiet_ignored_exceptions
from src.app.layout import RunLayout, raw_path
from src.app.locks import folder_lock, written_folder
from src.app.machine import GENERATE_HINT, MachineProfile, load_machine_profile, profile_from_dict

log = logging.getLogger("src.app")


def _profile(cfg, *, dry_run: bool) -> MachineProfile:
    path = Path(cfg.paths.machine_profile)
    if path.exists() or not dry_run:
        return load_machine_profile(path)
    example = Path(__file__).resolve().parents[2] / "config.yml.example"
    log.warning(
        "machine profile %s not found; the dry run uses %s. To create it: %s",
        path,
        example,
        GENERATE_HINT,
    )
    return profile_from_dict(read_yaml(example), str(example))


def _dry_run_config(cfg):
    """The run config for ``--dry_run``: synthetic data, one epoch, a small HVG set, at most two
    label fractions (of 10 % and above: 400 cells) of two draws each, figures at 80 dpi at
    most."""
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, source="synthetic", labels=None),
        preprocess=dataclasses.replace(
            cfg.preprocess, n_top_genes=min(cfg.preprocess.n_top_genes, 300)
        ),
        train=dataclasses.replace(cfg.train, epochs=1),
        viz=dataclasses.replace(cfg.viz, dpi=min(cfg.viz.dpi, 80)),
        eval=dataclasses.replace(
            cfg.eval,
            label_keys=("cell_type_coarse", "cell_type"),
            label_fractions=tuple(f for f in cfg.eval.label_fractions if f >= 0.1)[:2] or (0.5,),
            n_repeats=min(cfg.eval.n_repeats, 2),
        ),
    )


def _written(args: argparse.Namespace, command: str, layout: RunLayout, cfg) -> list[Path]:
    """Paths ``command`` may write, checked before any work (fail closed): ``--output``, the
    ``--latent`` of embed, the ``--annotated`` of evaluate, the ``--model_dir`` of train, the run
    folder where an output takes its default, and the raw download of a run that starts from
    ``data.source``."""
    paths = [args.output]
    paths += [args.latent] if command == "embed" else []
    paths += [args.annotated] if command == "evaluate" else []
    paths += [args.metrics] if command == "map" else []
    paths += [args.model_dir] if command in ("train", "pipeline") else []
    written = [Path(p) for p in paths if p]
    if command in USER_COMMANDS or not args.output:
        written.append(layout.config_used)
    from_source = command in ("train", "pipeline") and not args.input and not args.dry_run
    if from_source or (command == "download" and not args.output):
        written.append(raw_path(cfg))
    return written


PATH_OPTIONS = (
    "input",
    "output",
    "model_dir",
    "latent",
    "embedded",
    "metrics",
    "annotated",
    "reference",
    "reference_raw",
)


def _run_stage(command: str, cfg, layout: RunLayout, profile, **paths: str | Path | None) -> None:
    """One stage with explicit ``paths`` (the path options by name); a path left out or None
    takes its place in the run layout."""
    from src.app import stages

    def pick(name: str, default: Path) -> Path:
        return Path(paths[name]) if paths.get(name) else default

    model_dir = pick("model_dir", layout.model_dir)
    if command == "write-config":
        write_config(cfg, pick("output", layout.config_used))
    elif command == "download":
        stages.download(cfg, output=pick("output", raw_path(cfg)), profile=profile)
    elif command == "preprocess":
        raw, out = pick("input", raw_path(cfg)), pick("output", layout.preprocessed)
        stages.preprocess(cfg, input=raw, output=out, profile=profile)
    elif command == "train":
        data = pick("input", layout.preprocessed)
        stages.train(cfg, input=data, model_dir=model_dir, profile=profile)
    elif command == "embed":
        stages.embed(
            cfg,
            model_dir=model_dir,
            input=pick("input", layout.preprocessed),
            latent=pick("latent", layout.latent),
            output=pick("output", layout.embedded),
            profile=profile,
        )
    elif command == "evaluate":
        stages.evaluate(
            cfg,
            input=pick("input", layout.preprocessed),
            embedded=pick("embedded", layout.embedded),
            output=pick("output", layout.metrics),
            annotated=pick("annotated", layout.annotated),
            profile=profile,
        )
    elif command == "map":
        _map_stage(cfg, profile, pick, model_dir=model_dir, paths=paths)
    elif command == "plot":
        stages.plot(
            cfg,
            input=pick("input", layout.annotated),
            metrics=pick("metrics", layout.metrics),
            model_dir=model_dir,
            output=pick("output", layout.figures),
            profile=profile,
        )


def _map_stage(cfg, profile, pick, *, model_dir: Path, paths: dict) -> None:
    """``map``: the query ``--input`` annotated into ``--output``; beside it ``metrics.json``
    (or ``--metrics``), ``umap.png`` and, after a refit, ``model_shared_genes/``. The reference
    defaults to the run of ``--model_dir`` (its folder's preprocessed.h5ad)."""
    from src.app import stages
    from src.app.errors import ConfigError

    if not paths.get("input") or not paths.get("output"):
        raise ConfigError("map needs --input (the query's raw counts) and --output (its h5ad)")
    output = Path(paths["output"])
    run = RunLayout(model_dir.parent)
    stages.map_query(
        cfg,
        model_dir=model_dir,
        input=paths["input"],
        reference=pick("reference", run.preprocessed),
        reference_raw=pick("reference_raw", raw_path(cfg)),
        output=output,
        metrics=pick("metrics", output.parent / "metrics.json"),
        figure=output.parent / "umap.png",
        refit_dir=output.parent / "model_shared_genes",
        profile=profile,
    )


def _run_user(args: argparse.Namespace, command: str, cfg, layout: RunLayout, profile) -> None:
    """``train``, ``eval``, ``viz`` or ``pipeline`` on the run layout (``--dry_run``: pipeline on
    synthetic data); ``train --input`` starts from a preprocessed file, ``--model_dir`` names the
    checkpoint, ``--output`` the metrics of ``eval`` or the figures folder of ``viz``."""
    from src.app import stages

    steps: list[tuple[str, dict]] = []
    if command in ("train", "pipeline") and not args.input:
        raw = layout.root / "raw.h5ad" if args.dry_run else raw_path(cfg)
        if args.dry_run:
            from src.app.core.data.synthetic import synthetic_counts

            stages._write_h5ad(synthetic_counts(seed=cfg.seed), raw, profile)
        elif not raw.exists():
            steps.append(("download", {"output": raw}))
        steps.append(("preprocess", {"input": raw}))
    data, model_dir = {"input": args.input}, {"model_dir": args.model_dir}
    if command in ("train", "pipeline"):
        steps += [("train", {**data, **model_dir}), ("embed", {**data, **model_dir})]
    if command in ("eval", "pipeline"):
        steps.append(("evaluate", {**data, "output": args.output if command == "eval" else None}))
    if command in ("viz", "pipeline"):
        steps.append(("plot", {**model_dir, "output": args.output if command == "viz" else None}))
    for stage, paths in steps:
        _run_stage(stage, cfg, layout, profile, **paths)
    write_config(cfg, layout.config_used)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.dry_run:
        cfg = _dry_run_config(cfg)
    layout = RunLayout.of(cfg, args.output_dir)
    command = "pipeline" if args.dry_run else args.command
    written = _written(args, command, layout, cfg)
    roots = {"paths.results": cfg.paths.results, "paths.resources": cfg.paths.resources}
    check_outputs(written, {**roots, "--output_dir": args.output_dir})
    profile = None
    if command not in ("write-config", "plot"):
        from src.app.machine import set_thread_env

        profile = _profile(cfg, dry_run=args.dry_run)
        set_thread_env(profile.annotation_threads)
    elif command == "plot" and Path(cfg.paths.machine_profile).exists():
        profile = load_machine_profile(cfg.paths.machine_profile)  # its cores; plot needs no more
    # one writer per run folder (download writes to the shared resources only)
    with folder_lock(None if command == "download" else written_folder(layout.root, written)):
        if command in USER_COMMANDS:
            _run_user(args, command, cfg, layout, profile)
        else:
            paths = {k: getattr(args, k) for k in PATH_OPTIONS}
            _run_stage(command, cfg, layout, profile, **paths)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        with quiet_ignored_exceptions():
            return run(args)
    except AppError as exc:
        if args.debug:
            raise
        # one line, also for messages that quote a multi-line parser error
        print("error: " + re.sub(r"\s*\n\s*", " ", str(exc)).strip(), file=sys.stderr)
        return 2


def exit_process(code: int) -> None:
    """Leave with ``code``; past a write that filled the disk, without libhdf5's exit handler,
    which would crash (exit status 139 instead of 2) on the file it could not close."""
    if hdf5_half_closed():
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    exit_process(main())
