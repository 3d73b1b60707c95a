"""The workflow's own files, checked in-process: the generated config schema, the summary across
runs, the conda environment, the SLURM profile's partitions (the real cluster run is .ci/slurm)."""

import importlib.util
import math
import re
import tomllib
from pathlib import Path

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


def rules_smk(name: str, *names: str) -> dict:
    """The top-level functions and constants ``names`` of workflow/rules/``name``, run on their
    own (they are plain Python), without Snakemake's workflow."""
    from snakemake.exceptions import WorkflowError

    text = (ROOT / "workflow" / "rules" / name).read_text()
    pattern = re.compile(rf"^(def ({'|'.join(names)})\(|({'|'.join(names)}) = )")
    blocks = [block for block in re.split(r"\n(?=\S)", text) if pattern.match(block)]
    namespace = {"Path": Path, "WorkflowError": WorkflowError, "re": re, "yaml": yaml}
    exec("\n\n".join(blocks), namespace)
    return namespace


CLUSTER = rules_smk(
    "resources.smk", "GPU_STAGES", "LOCAL_STAGES", "CLUSTER_KEYS", "cluster_settings", "placement"
)


@pytest.mark.parametrize("gpu_vram_gb", [0.0, 24.0])
def test_slurm_jobs_get_the_gpu_partition_only_when_the_machine_profile_has_a_gpu(gpu_vram_gb):
    cluster = CLUSTER["cluster_settings"](ROOT / "profiles" / "slurm" / "cluster.yaml")
    cpu, gpu = cluster["cpu_partition"], cluster["gpu_partition"]
    placement = CLUSTER["placement"]
    for stage in ("preprocess", "train", "embed", "evaluate", "plot"):
        on_gpu = gpu_vram_gb > 0 and stage in ("train", "embed")
        expected = {"slurm_partition": gpu, "gpu": 1} if on_gpu else {"slurm_partition": cpu}
        if cluster["account"] is not None:
            expected["slurm_account"] = cluster["account"]
        assert placement(stage, gpu_vram_gb, cluster) == expected, stage
        # a local run: the GPU only, no partition
        assert placement(stage, gpu_vram_gb, None) == ({"gpu": 1} if on_gpu else {}), stage
    for stage in ("download", "config_used", "summary"):  # local rules: on the login node
        assert placement(stage, gpu_vram_gb, cluster) == {}, stage
    # a null name is left to SLURM (default partition, default account)
    named = {"account": "lab", "cpu_partition": None, "gpu_partition": "a100"}
    assert placement("train", 8.0, named) == {
        "gpu": 1,
        "slurm_partition": "a100",
        "slurm_account": "lab",
    }
    assert placement("plot", 8.0, named) == {"slurm_account": "lab"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("partition: gpu\n", "unknown key 'partition'"),
        ("account: 'my lab; rm -rf /'\n", "account must be a SLURM name or null"),
        ("- cpu\n", "expected a mapping"),
    ],
)
def test_cluster_settings_fail_on_unknown_keys_and_bad_names(tmp_path, text, message):
    from snakemake.exceptions import WorkflowError

    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    with pytest.raises(WorkflowError, match=re.escape(message)):
        CLUSTER["cluster_settings"](path)
    path.write_text("gpu_partition: a100\n")  # missing keys are null
    assert CLUSTER["cluster_settings"](path) == {
        "account": None,
        "cpu_partition": None,
        "gpu_partition": "a100",
    }


def test_slurm_profile_sets_no_resources():
    """Resources come from config.yml (common.smk): a profile's set-resources would be replaced as
    a whole by one given on the command line."""
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert not {"set-resources", "default-resources", "set-threads"} & set(profile)
