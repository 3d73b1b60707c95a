# each job's threads and resources from the machine profile (config.yml): memory and runtime
# that grow on each retry, the GPU, and on a cluster the SLURM partition and account. Included
# after common.smk, whose PROFILE it reads.
import re
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError

# RAM: a run may use max_ram_usage_gb; a job that loads the expression matrix (evaluate too, for
# the PCA baseline) gets that less a headroom for Snakemake and the OS, plot (labels, UMAP and
# metrics only) half of it; bookkeeping jobs a little
BUDGET_MB = int(PROFILE.max_ram_usage_gb * 1024)
JOB_MB = BUDGET_MB - min(max(512, BUDGET_MB // 10), BUDGET_MB // 2)
STAGE_MB = {"plot": JOB_MB // 2}
SMALL_MB = min(512, JOB_MB // 2)
GPU_STAGES = ("train", "embed", "map")
# bookkeeping: local rules (they run where Snakemake runs, a login node on a cluster), one thread
LOCAL_STAGES = ("download", "config_used", "summary")
# wall-clock minutes of a first attempt, for cluster schedulers
RUNTIME_MIN = {"train": 240, "evaluate": 60, "map": 240}
# a cluster job's partition and account: the one place to set them (see the file)
CLUSTER_FILE = REPO / "profiles" / "slurm" / "cluster.yaml"
CLUSTER_KEYS = ("account", "cpu_partition", "gpu_partition")

LOCAL_RUN = (
    workflow.global_resources["_nodes"].value is None and not workflow.remote_exec
)
if LOCAL_RUN:
    # a local run (no --jobs for a cluster, not a cluster job): jobs together stay within
    # config.yml's RAM and GPU, unless --resources says otherwise
    if "mem_mb" not in workflow.global_resources:
        workflow.register_resource("mem_mb", BUDGET_MB)
    if "gpu" not in workflow.global_resources:
        workflow.register_resource("gpu", 1 if PROFILE.gpu_vram_gb > 0 else 0)


def cluster_settings(path):
    """The partitions and account in ``path``: each of CLUSTER_KEYS a SLURM name or null (left to
    SLURM: the default partition, your default account); other keys or values fail."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise WorkflowError(f"cluster settings {path}: {error}") from error
    if not isinstance(data, dict):
        raise WorkflowError(
            f"cluster settings {path}: expected a mapping (keys: {', '.join(CLUSTER_KEYS)})"
        )
    for key, value in data.items():
        if key not in CLUSTER_KEYS:
            raise WorkflowError(
                f"cluster settings {path}: unknown key '{key}' (keys: {', '.join(CLUSTER_KEYS)})"
            )
        if value is not None and not re.fullmatch(r"[A-Za-z0-9._-]+", str(value)):
            raise WorkflowError(
                f"cluster settings {path}: {key} must be a SLURM name or null, not {value!r}"
            )
    return {
        key: None if data.get(key) is None else str(data[key]) for key in CLUSTER_KEYS
    }


def placement(stage, gpu_vram_gb, cluster):
    """Where a stage's job runs: ``gpu: 1`` for train and embed when the machine profile (the
    compute nodes) has a GPU, and for a cluster run (``cluster``: cluster_settings(), None for a
    local run) ``slurm_partition``, the GPU partition for a job with a GPU and the CPU partition
    otherwise, and ``slurm_account``; a null setting is left out, so SLURM's default applies.
    Local rules get neither."""
    gpu = stage in GPU_STAGES and gpu_vram_gb > 0
    out = {"gpu": 1} if gpu else {}
    if cluster is not None and stage not in LOCAL_STAGES:
        names = {
            "slurm_partition": cluster["gpu_partition" if gpu else "cpu_partition"],
            "slurm_account": cluster["account"],
        }
        out.update({key: value for key, value in names.items() if value is not None})
    return out


CLUSTER = None if LOCAL_RUN else cluster_settings(CLUSTER_FILE)


def threads_for(stage):
    """annotation_threads for compute stages (the CLI sets torch / OpenMP threads from the same
    key); bookkeeping is single-threaded."""
    return 1 if stage in LOCAL_STAGES else PROFILE.annotation_threads


def resources_for(stage):
    """``mem_mb`` and ``runtime`` (minutes), both more on each retry (a local run clamps memory to
    the global limit), and the job's GPU, partition and account (``placement``)."""
    base_mb = (
        SMALL_MB if stage in ("config_used", "summary") else STAGE_MB.get(stage, JOB_MB)
    )
    minutes = RUNTIME_MIN.get(stage, 30)
    return {
        "mem_mb": lambda wildcards, attempt: base_mb * attempt,
        "runtime": lambda wildcards, attempt: minutes * attempt,
        **placement(stage, PROFILE.gpu_vram_gb, CLUSTER),
    }
