# cellvae workflow: download -> preprocess -> train -> embed -> evaluate -> plot, for
# each run.
# run config: config/default.yaml (or --config app_config=PATH), APP__SECTION__KEY env overrides;
# several runs side by side: `runs` (run id -> overrides) in a --configfile;
# machine profile: config.yml (created by scripts/generate_config.sh on the first run), which sets
# each job's threads and resources and, for a local run, the global RAM and GPU limits.
from snakemake.utils import min_version

min_version("9.0")


include: "workflow/rules/common.smk"
include: "workflow/rules/resources.smk"


# one writer per run folder: before its first job a run locks results/.<run_id>.lock for each of
# its runs (src/app/locks.py), so that a second run on one of them, from any working folder, or a
# CLI run into one, is refused (Snakemake's own lock covers one working folder); its jobs join
# the locks through CELLVAE_LOCK_TOKEN; the kernel drops them should this process die
from src.app.errors import OutputError
from src.app.locks import lock_workflow

RUN_LOCKS = []


onstart:
    try:
        RUN_LOCKS.extend(
            lock_workflow([RunLayout.of(cfg).root for cfg in RUNS.values()])
        )
    except OutputError as error:
        raise WorkflowError(str(error)) from None


onsuccess:
    for lock in RUN_LOCKS:
        lock.release()


onerror:
    for lock in RUN_LOCKS:
        lock.release()


report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        final_outputs(),


include: "workflow/rules/download.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/plot.smk"
include: "workflow/rules/map.smk"
include: "workflow/rules/summary.smk"
