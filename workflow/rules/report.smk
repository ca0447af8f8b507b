# Stage 6: one self-contained page, results/report.html (sparsenets.report): the preset's grid, every
# claim's verdict with its numbers, every figure with its caption (the caption text of figure.rst). It is
# also in `snakemake --report`'s page, under "Report". Its inputs and context: sparsenets.study (Grid.report).

REPORT = PATHS("report")


rule report:
    input:
        **inputs("report", REPORT, "figures", "claims", "data", "tables", "summary"),
        template=os.path.join(workflow.basedir, "workflow", "report", "figure.rst"),  # the figures' captions
    output:
        html=report(REPORT, caption="../report/report.rst", category="Report"),
    log:
        PATHS("report_log"),
    params:
        **params("report", REPORT, "context"),
    shell:
        "{PY} -m sparsenets report --context '{params.context}' --caption-template {input.template} "
        "--out {output.html} > {log} 2>&1"
