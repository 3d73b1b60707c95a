rule train:
    input:
        data=RUN.preprocessed,
        code=stage_code("data", "model"),
    output:
        directory(RUN.model_dir),
    log:
        LOGS / "train.log",
    benchmark:
        BENCHMARKS / "train.tsv"
    conda:
        ENV
    threads: threads_for("train")
    resources:
        **resources_for("train"),
    params:
        cfg=config_keys(
            "model",
            "train",
            "annotation",
            "data.batch_key",
            "eval.transfer_key",
            "eval.transfer_reference",
            "seed",
        ),
        defaults=machine_defaults,
        cli=cli,
    shell:
        "{params.cli} train --input {input.data} --model_dir {output} > {log} 2>&1"
