rule preprocess:
    input:
        RAW,
    output:
        LAYOUT.preprocessed,
    log:
        LOGS / "preprocess.log",
    shell:
        "{CLI} preprocess --input {input} --output {output} > {log} 2>&1"
