rule annotate:
    input:
        data=RUN.embedded,
        metrics=RUN.metrics,
        code=stage_code("annotate"),
    output:
        RUN.annotated,
    log:
        LOGS / "annotate.log",
    benchmark:
        BENCHMARKS / "annotate.tsv"
    conda:
        ENV
    threads: threads_for("annotate")
    resources:
        **resources_for("annotate"),
    params:
        # every key: annotated.h5ad holds the run's whole config in .uns
        cfg=config_keys(*ALL_KEYS),
        cli=cli,
    shell:
        "{params.cli} annotate --input {input.data} --metrics {input.metrics}"
        " --output {output} > {log} 2>&1"
