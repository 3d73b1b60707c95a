rule evaluate:
    input:
        latent=RUN.latent,
        data=RUN.embedded,
        code=stage_code("eval"),
    output:
        report(
            RUN.metrics,
            caption="../report/metrics.rst",
            category="Metrics",
            labels={"run": "{run_id}", "file": "metrics.json"},
        ),
    log:
        LOGS / "evaluate.log",
    benchmark:
        BENCHMARKS / "evaluate.tsv"
    conda:
        ENV
    threads: threads_for("evaluate")
    resources:
        **resources_for("evaluate"),
    params:
        # annotation: the classifier head's label key and fraction (its visible cells, and
        # the joint point of the label-efficiency curve)
        cfg=config_keys("eval", "baseline", "annotation", "seed"),
        cli=cli,
    shell:
        "{params.cli} evaluate --latent {input.latent} --input {input.data} --output {output}"
        " > {log} 2>&1"
