# cellvae workflow: download -> preprocess -> train -> embed -> evaluate -> plot
# run config: config/default.yaml (or --config app_config=PATH), APP__SECTION__KEY env overrides;
# machine profile: config.yml (created by scripts/generate_config.sh on the first run).
from snakemake.utils import min_version

min_version("9.0")


include: "workflow/rules/common.smk"


rule all:
    input:
        LAYOUT.metrics,
        LAYOUT.latent,
        LAYOUT.umap,
        LAYOUT.config_used,
    default_target: True


include: "workflow/rules/download.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/plot.smk"
