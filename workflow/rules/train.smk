rule train:
    input:
        LAYOUT.preprocessed,
    output:
        directory(LAYOUT.model_dir),
    log:
        LOGS / "train.log",
    shell:
        "{CLI} train --input {input} --model_dir {output} > {log} 2>&1"
