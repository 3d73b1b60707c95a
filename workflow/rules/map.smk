rule map:
    # a query annotated with the run's model: `query: {name: path}` in the run config
    input:
        model=RUN.model_dir,
        reference=RUN.preprocessed,
        reference_raw=raw_of,
        query=query_source,
        code=stage_code("data", "model", "map", "plot"),
    output:
        annotated=QUERY_DIR / "annotated.h5ad",
        umap=report(
            QUERY_DIR / "umap.png",
            caption="../report/umap_query.rst",
            category="Queries",
            labels={"run": "{run_id}", "query": "{query}"},
        ),
    log:
        LOGS / "map_{query}.log",
    benchmark:
        BENCHMARKS / "map_{query}.tsv"
    conda:
        ENV
    threads: threads_for("map")
    resources:
        **resources_for("map"),
    params:
        # a refit on the shared genes trains with the run's settings
        cfg=config_keys(
            "map",
            "preprocess",
            "model",
            "train",
            "annotation",
            "eval.label_keys",
            "data.batch_key",
            "viz",
            "seed",
        ),
        machine=machine_defaults,
        metrics=query_file("metrics.json"),
        cli=cli,
    shell:
        "{params.cli} map --model_dir {input.model} --reference {input.reference}"
        " --reference_raw {input.reference_raw} --input {input.query}"
        " --output {output.annotated} --metrics {params.metrics} > {log} 2>&1"
