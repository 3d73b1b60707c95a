rule evaluate:
    input:
        data=RUN.preprocessed,
        embedded=RUN.embedded,
        code=stage_code("data", "evaluate"),
    output:
        metrics=report(
            RUN.metrics,
            caption="../report/metrics.rst",
            category="Metrics",
            labels={"run": "{run_id}", "file": "metrics.json"},
        ),
        annotated=RUN.annotated,
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
        # annotation: the visible draw when the model has no head; viz: the UMAP's settings
        # (viz.dpi is the plot stage's alone); the whole config goes into annotated.h5ad, but
        # only these keys change what it holds besides that copy
        cfg=config_keys(
            "eval",
            "baseline",
            "annotation",
            "data.batch_key",
            "seed",
            "viz.n_neighbors",
            "viz.min_dist",
        ),
        cli=cli,
    shell:
        "{params.cli} evaluate --input {input.data} --embedded {input.embedded}"
        " --output {output.metrics} --annotated {output.annotated} > {log} 2>&1"
