rule download:
    input:
        source_input(),
    output:
        RAW,
    log:
        LOGS / "download.log",
    localrule: True
    shell:
        "{CLI} download --output {output} > {log} 2>&1"
