rule download:
    input:
        source_files,
        code=stage_code("data"),
    output:
        RAW,
    log:
        Path(BASE.paths.logs) / "download" / "{source}.log",
    benchmark:
        Path("benchmarks") / "download" / "{source}.tsv"
    localrule: True
    conda:
        ENV
    threads: threads_for("download")
    resources:
        **resources_for("download"),
    params:
        cfg=config_keys("data"),
        cli=cli,
    shell:
        "{params.cli} download --output {output} > {log} 2>&1"
