rule evaluate:
    input:
        latent=LAYOUT.latent,
        data=LAYOUT.embedded,
    output:
        LAYOUT.metrics,
    log:
        LOGS / "evaluate.log",
    shell:
        "{CLI} evaluate --latent {input.latent} --input {input.data} --output {output} > {log} 2>&1"
