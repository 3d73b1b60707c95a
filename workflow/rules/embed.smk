rule embed:
    input:
        model=LAYOUT.model_dir,
        data=LAYOUT.preprocessed,
    output:
        latent=LAYOUT.latent,
        h5ad=LAYOUT.embedded,
    log:
        LOGS / "embed.log",
    shell:
        "{CLI} embed --model_dir {input.model} --input {input.data}"
        " --latent {output.latent} --output {output.h5ad} > {log} 2>&1"
