# helpers shared by the rules: the run configs (validated against the schema generated from
# src/app/config.py, then built by the CLI's own loader), the machine profile, the files of each
# run and each job's command (resources.smk: the resources the profile gives each job). Rules
# use `{run_id}` (and download `{source}`) wildcards, so several runs side by side are separate
# jobs of one DAG.
import dataclasses
import json
import os
import re
import shlex
import sys
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from src.app.config import (
    SOURCE_PBMC3K,
    apply_env_overrides,
    check_safe_name,
    config_from_dict,
    config_to_dict,
    read_yaml,
)
from src.app.core.data.download import source_name
from src.app.layout import RunLayout, raw_path
from src.app.machine import GENERATE_HINT, load_machine_profile, resolve_runtime

REPO = Path(workflow.basedir)
CORE = REPO / "src" / "app" / "core"
SCRIPTS = REPO / "workflow" / "scripts"
APP_SCHEMA = "../schemas/config.schema.yaml"


def shown(path):
    """``path`` relative to the working folder when inside it (shorter commands and logs)."""
    path = Path(path).absolute()
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


# --- run configs --------------------------------------------------------------------------------

validate(config, "../schemas/workflow.schema.yaml")
APP_CONFIG = str(shown(config.get("app_config", REPO / "config" / "default.yaml")))


def override_env(overrides, prefix="APP__"):
    """A run's overrides as the loader's environment overrides: {"model": {"likelihood": "nb"}}
    -> {"APP__MODEL__LIKELIHOOD": "nb"}; values the loader would read as another type are
    written as JSON, which is YAML ("001" -> '"001"')."""
    env = {}
    for key, value in overrides.items():
        name = f"{prefix}{key.upper()}"
        if isinstance(value, dict):
            env.update(override_env(value, f"{name}__"))
        elif isinstance(value, str) and yaml.safe_load(value) == value:
            env[name] = value
        else:
            env[name] = json.dumps(value)
    return env


def load_run(run_env):
    """Run config file + process environment + ``run_env``, checked by the schema (which also
    fills defaults), then built by the same loader the CLI uses in the job."""
    data = apply_env_overrides(read_yaml(APP_CONFIG), {**os.environ, **run_env})
    validate(data, APP_SCHEMA)
    return config_from_dict(data)


BASE = load_run({})
if config.get("runs"):
    # `runs: {run_id: overrides}`: each run is the base config with its overrides
    RUN_ENV = {}
    for key, overrides in config["runs"].items():
        run_id = check_safe_name(str(key), f"runs.{key}")
        fixed = sorted({"run_id", "paths"} & set(overrides or {}))
        if fixed:
            raise WorkflowError(f"runs.{run_id}: '{fixed[0]}' is shared by all runs")
        RUN_ENV[run_id] = override_env({**(overrides or {}), "run_id": run_id})
else:
    RUN_ENV = {BASE.run_id: {}}
RUNS = {run_id: load_run(env) for run_id, env in RUN_ENV.items()}

# download: one job per data source, shared by the runs that read it
SOURCES = {}
for run_id, cfg in RUNS.items():
    first = SOURCES.setdefault(source_name(cfg.data.source), run_id)
    if RUNS[first].data != cfg.data:
        raise WorkflowError(
            f"runs {first} and {run_id} name the same source file with other data settings"
        )

# --- machine profile and file patterns ----------------------------------------------------------

if not Path(BASE.paths.machine_profile).exists():
    raise WorkflowError(
        f"machine profile {BASE.paths.machine_profile} not found; {GENERATE_HINT}"
    )
PROFILE = load_machine_profile(BASE.paths.machine_profile)

# file patterns; layout.py stays the one definition of where a run's files live
RUN = RunLayout(Path(BASE.paths.results) / "{run_id}")
RAW = Path(BASE.paths.resources) / "raw" / "{source}.h5ad"
LOGS = Path(BASE.paths.logs) / "{run_id}"
BENCHMARKS = Path("benchmarks") / "{run_id}"
SUMMARY = Path(BASE.paths.results) / "runs_summary.tsv"
# the map stage's folder of each query: annotated.h5ad, umap.png, metrics.json (where the
# query has labels), model_shared_genes/ (after a refit)
QUERY_DIR = RUN.root / "query" / "{query}"
QUERIES = sorted({name for cfg in RUNS.values() for name in cfg.query})
ALL_KEYS = tuple(config_to_dict(BASE))
# software of every rule for `--sdm conda`; by default jobs use the environment running Snakemake
ENV = "../envs/cellvae.yaml"
for run_id, cfg in RUNS.items():
    assert RunLayout.of(cfg).root == Path(str(RUN.root).format(run_id=run_id)), run_id
    assert raw_path(cfg) == Path(str(RAW).format(source=source_name(cfg.data.source)))


wildcard_constraints:
    run_id="|".join(map(re.escape, RUNS)),
    source="|".join(map(re.escape, SOURCES)),
    query="|".join(map(re.escape, QUERIES)) or "(?!)",


def run_id_of(wildcards):
    """A job's run (for download: the first run that reads its source)."""
    return getattr(wildcards, "run_id", None) or SOURCES[wildcards.source]


def run_of(wildcards):
    return RUNS[run_id_of(wildcards)]


def source_files(wildcards):
    """Download inputs: a local source file or folder and the label table, where named."""
    data = run_of(wildcards).data
    return [
        p for p in (data.source, data.labels) if p is not None and p != SOURCE_PBMC3K
    ]


def raw_of(wildcards):
    return raw_path(run_of(wildcards))


def query_source(wildcards):
    """The map job's query: its run's ``query.<name>`` path."""
    queries = run_of(wildcards).query
    if wildcards.query not in queries:
        raise WorkflowError(f"run {wildcards.run_id} has no query '{wildcards.query}'")
    return queries[wildcards.query]


def query_file(name):
    """Param: the file ``name`` in a map job's query folder (one the job may not write)."""
    return lambda wildcards: str(QUERY_DIR / name).format(
        run_id=wildcards.run_id, query=wildcards.query
    )


def final_outputs():
    """What a run is for; the intermediate preprocessed.h5ad (temp() when not kept) is left out."""
    names = ("model_dir", "latent", "embedded", "metrics", "annotated", "config_used")
    files = [str(getattr(RUN, name)) for name in names]
    files += [str(path) for path in RUN.figure_files.values()]
    queries = [
        str(QUERY_DIR / name).format(run_id=run_id, query=query)
        for run_id, cfg in RUNS.items()
        for query in cfg.query
        for name in ("annotated.h5ad", "umap.png")
    ]
    return expand(files, run_id=RUNS) + queries + ([SUMMARY] if len(RUNS) > 1 else [])


# --- the job's command and what reruns it -------------------------------------------------------

# jobs run the Python that runs Snakemake (the project's environment), or with `--sdm conda` the
# `python` of the rule's conda environment
CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
PYTHON = "python" if CONDA else shlex.quote(sys.executable)


def cli(wildcards, threads):
    """``PYTHON -m src.app.cli --config FILE`` for a job, after its run's APP__ overrides.

    Naming ``threads`` makes Snakemake treat this param as derived from the job, so it is not
    recorded: the config file's name is not a result, and override changes reach each stage
    through the keys it reads (``config_keys``)."""
    env = " ".join(
        f"{name}={shlex.quote(value)}"
        for name, value in RUN_ENV[run_id_of(wildcards)].items()
    )
    return f"{env} {PYTHON} -m src.app.cli --config {shlex.quote(APP_CONFIG)}".strip()


def config_keys(*keys):
    """Params: the config keys (``section`` or ``section.key``) a stage reads; a change reruns it
    and, through its outputs, the stages after it."""

    def values(wildcards):
        data = config_to_dict(run_of(wildcards))
        out = {}
        for key in keys:
            node = data
            for part in key.split("."):
                node = node[part]
            out[key] = node
        return out

    return values


def machine_defaults(wildcards):
    """Params of train: epochs, batch size and learning rate, which come from config.yml where
    the run config leaves them null (threads, memory and device do not change results).
    """
    train = dataclasses.replace(run_of(wildcards).train, device="cpu")
    runtime = resolve_runtime(PROFILE, train, cuda_available=False)
    return {
        "epochs": runtime.epochs,
        "batch_size": runtime.batch_size,
        "lr": runtime.lr,
    }


# each layer's code: its folder under src/app/core and its public faces there (SPEC.md)
FACES = {
    "data": [],
    "model": ["data_adapter.py", "model_adapter.py", "train.py"],
    "evaluate": ["eval.py"],
    "plot": ["viz.py"],
    "map": [],
}


def stage_code(*layers):
    """The code of the ``layers`` a stage runs, as inputs: editing it reruns the stage (and the
    stages after it); dependencies point one way (data, model, evaluate, plot)."""
    files = []
    for layer in layers:
        files += sorted((CORE / layer).glob("*.py")) + [CORE / f for f in FACES[layer]]
    return [str(shown(path)) for path in files]


def intermediate(path):
    """``temp()`` unless config.yml keeps intermediate files. Only preprocessed.h5ad is one:
    annotated.h5ad holds the same data with every result added.
    """
    return path if PROFILE.keep_intermediate_files else temp(path)
