rule plot:
    input:
        latent=RUN.latent,
        data=RUN.embedded,
        code=stage_code("viz"),
    output:
        report(
            RUN.umap,
            caption="../report/umap.rst",
            category="Figures",
            labels={"run": "{run_id}", "figure": "UMAP"},
        ),
    log:
        LOGS / "plot.log",
    benchmark:
        BENCHMARKS / "plot.tsv"
    conda:
        ENV
    threads: threads_for("plot")
    resources:
        **resources_for("plot"),
    params:
        cfg=config_keys("viz", "eval.label_keys", "seed"),
        cli=cli,
    shell:
        "{params.cli} plot --latent {input.latent} --input {input.data} --output {output}"
        " > {log} 2>&1"


rule config_used:
    input:
        RUN.metrics,
        RUN.umap,
    output:
        RUN.config_used,
    log:
        LOGS / "config_used.log",
    benchmark:
        BENCHMARKS / "config_used.tsv"
    localrule: True
    conda:
        ENV
    threads: threads_for("config_used")
    resources:
        **resources_for("config_used"),
    params:
        cfg=config_keys(*ALL_KEYS),
        cli=cli,
    shell:
        "{params.cli} write-config --output {output} > {log} 2>&1"
