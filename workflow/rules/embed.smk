rule embed:
    input:
        model=RUN.model_dir,
        data=RUN.preprocessed,
        code=stage_code("data", "model"),
    output:
        latent=RUN.latent,
        h5ad=RUN.embedded,
    log:
        LOGS / "embed.log",
    benchmark:
        BENCHMARKS / "embed.tsv"
    conda:
        ENV
    threads: threads_for("embed")
    resources:
        **resources_for("embed"),
    params:
        # the head's label key names the prediction columns; the likelihood picks the matrix
        cfg=config_keys(
            "annotation",
            "model.likelihood",
            "data.batch_key",
            "eval.transfer_key",
            "eval.transfer_reference",
            "seed",
        ),
        cli=cli,
    shell:
        "{params.cli} embed --model_dir {input.model} --input {input.data}"
        " --latent {output.latent} --output {output.h5ad} > {log} 2>&1"
