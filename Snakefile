# cellvae workflow: download -> preprocess -> train -> embed -> evaluate -> plot, for
# each run.
# run config: config/default.yaml (or --config app_config=PATH), APP__SECTION__KEY env overrides;
# several runs side by side: `runs` (run id -> overrides) in a --configfile;
# machine profile: config.yml (created by scripts/generate_config.sh on the first run), which sets
# each job's threads and resources and, for a local run, the global RAM and GPU limits.
from snakemake.utils import min_version

min_version("9.0")


include: "workflow/rules/common.smk"


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
include: "workflow/rules/summary.smk"
