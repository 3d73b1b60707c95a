rule plot:
    input:
        latent=LAYOUT.latent,
        data=LAYOUT.embedded,
    output:
        LAYOUT.umap,
    log:
        LOGS / "plot.log",
    shell:
        "{CLI} plot --latent {input.latent} --input {input.data} --output {output} > {log} 2>&1"


rule config_used:
    input:
        LAYOUT.metrics,
        LAYOUT.umap,
    output:
        LAYOUT.config_used,
    log:
        LOGS / "config_used.log",
    localrule: True
    shell:
        "{CLI} write-config --output {output} > {log} 2>&1"
