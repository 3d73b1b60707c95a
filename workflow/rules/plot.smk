rule plot:
    input:
        data=RUN.annotated,
        metrics=RUN.metrics,
        model=RUN.model_dir,
        code=stage_code("plot"),
    output:
        umap=report(
            RUN.figure_files["umap"],
            caption="../report/umap.rst",
            category="Figures",
            labels={"run": "{run_id}", "figure": "UMAP"},
        ),
        confusion=report(
            RUN.figure_files["confusion"],
            caption="../report/confusion.rst",
            category="Figures",
            labels={"run": "{run_id}", "figure": "confusion matrices"},
        ),
        label_efficiency=report(
            RUN.figure_files["label_efficiency"],
            caption="../report/label_efficiency.rst",
            category="Figures",
            labels={"run": "{run_id}", "figure": "label efficiency"},
        ),
        training_curves=report(
            RUN.figure_files["training_curves"],
            caption="../report/training_curves.rst",
            category="Figures",
            labels={"run": "{run_id}", "figure": "training curves"},
        ),
    log:
        LOGS / "plot.log",
    benchmark:
        BENCHMARKS / "plot.tsv"
    conda:
        ENV
    threads: threads_for("plot")
    resources:
        **resources_for("plot"),
    params:
        cfg=config_keys("viz.dpi"),
        cli=cli,
    shell:
        "{params.cli} plot --input {input.data} --metrics {input.metrics}"
        " --model_dir {input.model} --output $(dirname {output.umap}) > {log} 2>&1"


rule config_used:
    input:
        RUN.metrics,
        RUN.umap,
    output:
        RUN.config_used,
    log:
        LOGS / "config_used.log",
    benchmark:
        BENCHMARKS / "config_used.tsv"
    localrule: True
    conda:
        ENV
    threads: threads_for("config_used")
    resources:
        **resources_for("config_used"),
    params:
        cfg=config_keys(*ALL_KEYS),
        cli=cli,
    shell:
        "{params.cli} write-config --output {output} > {log} 2>&1"
