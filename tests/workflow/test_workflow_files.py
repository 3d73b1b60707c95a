"""The workflow's own files, checked in-process: the generated config schema, the summary across
runs, the conda environment."""

import importlib.util
import math
import tomllib

import pytest
import yaml

from src.app import schema
from src.app.config import Config, config_from_dict, read_yaml
from tests.workflow.conftest import ROOT

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def fill_defaults(data: dict) -> dict:
    """Validate ``data`` against the committed schema the way the workflow does (defaults set)."""
    from snakemake.utils import validate

    validate(data, str(SCHEMA))
    return data


def test_committed_schema_is_the_generated_one():
    assert SCHEMA.read_text() == schema.render(), f"config changed; regenerate: {schema.REGENERATE}"


def test_schema_defaults_and_loader_agree():
    assert config_from_dict(fill_defaults({})) == Config()
    data = read_yaml(ROOT / "config" / "default.yaml")
    assert config_from_dict(fill_defaults(data)) == config_from_dict(data)


@pytest.mark.parametrize(
    "data",
    [
        {"train": {"epocs": 3}},
        {"sede": 1},
        {"model": {"likelihood": "laplace"}},
        {"model": {"hidden_dims": 128}},
        {"train": {"lr": "fast"}},
    ],
)
def test_schema_rejects_unknown_keys_and_bad_values(data):
    from snakemake.exceptions import WorkflowError

    with pytest.raises(WorkflowError):
        fill_defaults(data)


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(
        name, ROOT / "workflow" / "scripts" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summary_table_gives_mean_and_sd_across_runs(tmp_path):
    summarise = load_script("summarise_runs")
    runs = {
        "a": {
            "f1_macro": 0.8,
            "labels": {"x": {"knn": {"auroc": 0.9, "per_class_f1": {"T": 1.0}}}},
        },
        "b": {
            "f1_macro": 0.9,
            "labels": {"x": {"knn": {"auroc": 0.7, "per_class_f1": {"T": 0.5}}}},
        },
    }
    rows = summarise.summary_rows(runs)
    assert rows[0] == ["metric", "mean", "sd", "a", "b"]
    table = {row[0]: [float(v) for v in row[1:]] for row in rows[1:]}
    assert set(table) == {"f1_macro", "labels.x.knn.auroc"}
    mean, sd, a, b = table["f1_macro"]
    assert (mean, a, b) == pytest.approx((0.85, 0.8, 0.9))
    assert sd == pytest.approx(math.sqrt(0.005), abs=1e-4)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "metrics.json").write_text('{"accuracy": 0.5}')
    summarise.main(["--output", str(tmp_path / "s.tsv"), str(tmp_path / "a" / "metrics.json")])
    assert (tmp_path / "s.tsv").read_text().splitlines()[1] == "accuracy\t0.5000\tnan\t0.5000"


def test_conda_environment_lists_the_project_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "workflow" / "envs" / "cellvae.yaml").read_text())
    pip = next(dep["pip"] for dep in env["dependencies"] if isinstance(dep, dict))
    assert sorted(pip) == sorted(project["dependencies"] + project["optional-dependencies"]["ml"])
