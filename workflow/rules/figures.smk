# Stage 5: the papers' figures, drawn from the tidy tables (never from MLflow queries), and the
# claims table that says what replicated. `snakemake --report report.html` puts both, captioned
# from workflow/report/, into one self-contained page. Which figures (and claims) a study has, the
# tables each reads and its options: its protocol (sparsenets.study.PROTOCOLS).

report: "../report/workflow.rst"

FIGURE = PATHS("figure", ext="png")


rule figure:
    input:
        lookup("figure", FIGURE, "inputs", "tables"),
    output:
        png=report(
            FIGURE,
            caption="../report/figure.rst",
            category="Figures",
            subcategory="{study}",
            labels={"figure": "{fig}"},
        ),
        pdf=PATHS("figure", ext="pdf"),
    log:
        PATHS("figure_log"),
    group:
        "figures"
    params:
        argv=argv("figure", FIGURE),
    shell:
        "{PY} -m sparsenets {params.argv} > {log} 2>&1"


CLAIMS = PATHS("claims", ext="md")


rule claims:
    # Each study's claims (its protocol's: C1-C3 for phew, C4-C7 and C5b for deconstructing), from its tables.
    input:
        lookup("claims", CLAIMS, "inputs", "tables"),
        data=lookup("claims", CLAIMS, "inputs", "data"),  # named with their sha256 in claims.md
    output:
        md=CLAIMS,
        csv=report(PATHS("claims", ext="csv"), caption="../report/claims.rst", category="Claims"),
    log:
        PATHS("claims_log"),
    group:
        "figures"
    params:
        argv=argv("claims", CLAIMS),
    shell:
        "{PY} -m sparsenets {params.argv} > {log} 2>&1"


SUMMARY = PATHS("summary")


rule mlflow_summary:
    # Each study's figures and claims.md on its MLflow summary run, once the claims are judged.
    input:
        lookup("mlflow_summary", SUMMARY, "inputs", "figures"),
        claims=lookup("mlflow_summary", SUMMARY, "inputs", "claims"),
    output:
        SUMMARY,
    log:
        PATHS("summary_log"),
    params:
        argv=argv("mlflow_summary", SUMMARY),
    shell:
        "{PY} -m sparsenets {params.argv} > {log} 2>&1"
