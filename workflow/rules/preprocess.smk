rule preprocess:
    input:
        raw=raw_of,
        code=stage_code("data"),
    output:
        intermediate(RUN.preprocessed),
    log:
        LOGS / "preprocess.log",
    benchmark:
        BENCHMARKS / "preprocess.tsv"
    conda:
        ENV
    threads: threads_for("preprocess")
    resources:
        **resources_for("preprocess"),
    params:
        cfg=config_keys("preprocess", "data.batch_key", "seed"),
        cli=cli,
    shell:
        "{params.cli} preprocess --input {input.raw} --output {output} > {log} 2>&1"
