rule summary:
    input:
        metrics=expand(RUN.metrics, run_id=RUNS),
        script=SCRIPTS / "summarise_runs.py",
    output:
        report(
            SUMMARY,
            caption="../report/summary.rst",
            category="Runs",
            labels={"table": "metrics across runs"},
        ),
    log:
        Path(BASE.paths.logs) / "runs_summary.log",
    benchmark:
        Path("benchmarks") / "runs_summary.tsv"
    localrule: True
    conda:
        ENV
    threads: threads_for("summary")
    resources:
        **resources_for("summary"),
    params:
        python=PYTHON,
    shell:
        "{params.python} {input.script} --output {output} {input.metrics} > {log} 2>&1"
