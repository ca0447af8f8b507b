# Stage 5: the papers' figures, drawn from the tidy tables (never from MLflow queries), and the
# claims table that says what replicated. `snakemake --report report.html` puts both, captioned
# from workflow/report/, into one self-contained page.

report: "../report/workflow.rst"

FIGURES = {  # study -> figure -> the tables it reads
    "phew": {
        "accuracy_vs_density": ["runs"],
        "layer_widths": ["layers"],
        "path_kernel": ["runs"],
        "train_loss": ["epochs"],
    },
    "deconstructing": {
        "reinit": ["runs"],
        "sensitivity": ["sensitivity"],
        "indegree": ["indegree", "overlap"],
        "freezing": ["runs"],
    },
}


def figure_options(study, fig):
    """The density a one-density figure is drawn at."""
    if study == "phew" and fig in ("layer_widths", "train_loss"):
        return {"density": STUDIES["phew"].get("width_density")}
    if study == "deconstructing" and fig in ("sensitivity", "indegree"):
        return {"density": focus_density(study)}
    return {}


rule figure:
    input:
        lambda w: [f"{RESULTS}/{w.study}/tables/{t}.csv" for t in FIGURES[w.study][w.fig]],
    output:
        png=report(
            f"{RESULTS}/{{study}}/figures/{{fig}}.png",
            caption="../report/figure.rst",
            category="Figures",
            subcategory="{study}",
            labels={"figure": "{fig}"},
        ),
        pdf=f"{RESULTS}/{{study}}/figures/{{fig}}.pdf",
    log:
        f"{LOGS}/{{study}}/figures/{{fig}}.log",
    params:
        options=lambda w: json.dumps(figure_options(w.study, w.fig)),
    shell:
        "{PY} -m sparsenets figure {wildcards.fig} --tables {input} --options '{params.options}' "
        "--out {output.png} {output.pdf} > {log} 2>&1"


CLAIM_TABLES = {  # claims CLI option -> (study, table)
    "phew-runs": ("phew", "runs"),
    "phew-layers": ("phew", "layers"),
    "dec-runs": ("deconstructing", "runs"),
    "dec-sensitivity": ("deconstructing", "sensitivity"),
    "dec-overlap": ("deconstructing", "overlap"),
}


def claim_options():
    """What the claims are tested at (sparsenets.claims.ClaimOptions), from the studies the preset has."""
    options = {}
    if "phew" in STUDIES:
        options["claim_density_max"] = STUDIES["phew"].get("claim_density_max", 0.11)
    if "deconstructing" in STUDIES:
        dec = STUDIES["deconstructing"]
        options.update(focus_density=focus_density("deconstructing"),
                       freeze_claim_epoch=dec.get("freeze_claim_epoch", 1),
                       equivalence_margin=dec.get("equivalence_margin", 0.01))
    return options


rule claims:
    input:
        **{
            opt.replace("-", "_"): f"{RESULTS}/{study}/tables/{table}.csv"
            for opt, (study, table) in CLAIM_TABLES.items()
            if study in STUDIES
        },
    output:
        md=f"{RESULTS}/claims.md",
        csv=report(f"{RESULTS}/claims.csv", caption="../report/claims.rst", category="Claims"),
    log:
        f"{LOGS}/claims.log",
    params:
        tables=lambda w, input: " ".join(f"--{k.replace('_', '-')} {v}" for k, v in input.items()),
        options=lambda w: json.dumps(claim_options()),
    shell:
        "{PY} -m sparsenets claims {params.tables} --preset {config[preset]} --options '{params.options}' "
        "--md {output.md} --csv {output.csv} > {log} 2>&1"
