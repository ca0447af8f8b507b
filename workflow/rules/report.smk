# Stage 6: one self-contained page, results/report.html (sparsenets.report): the preset's grid, every
# claim's verdict with its numbers, every figure with its caption (the caption text of figure.rst). It is
# also in `snakemake --report`'s page, under "Report". Its inputs and context: sparsenets.study (Grid.report).

REPORT = PATHS("report")
CAPTIONS = os.path.join(workflow.basedir, "workflow", "report", "figure.rst")  # the figures' caption text


rule report:
    input:
        **inputs("report", REPORT, "figures", "claims", "data", "tables", "summary"),
        template=CAPTIONS,
    output:
        html=report(REPORT, caption="../report/report.rst", category="Report"),
    log:
        PATHS("report_log"),
    params:
        argv=argv("report", REPORT, caption_template=CAPTIONS),
    shell:
        "{PY} -m sparsenets {params.argv} > {log} 2>&1"
