# Stage 5: the papers' figures, drawn from the tidy tables (never from MLflow queries).

PHEW_FIGURES = {  # figure -> the tables it reads
    "accuracy_vs_density": ["runs"],
    "layer_widths": ["layers"],
    "path_kernel": ["runs"],
    "train_loss": ["epochs"],
}


rule phew_figure:
    input:
        lambda w: [f"{RESULTS}/phew/tables/{t}.csv" for t in PHEW_FIGURES[w.fig]],
    output:
        png=f"{RESULTS}/phew/figures/{{fig}}.png",
        pdf=f"{RESULTS}/phew/figures/{{fig}}.pdf",
    log:
        f"{LOGS}/phew/figures/{{fig}}.log",
    wildcard_constraints:
        fig="|".join(PHEW_FIGURES),
    params:
        options=lambda w: json.dumps(
            {"density": STUDIES["phew"].get("width_density")} if w.fig in ("layer_widths", "train_loss") else {}
        ),
    shell:
        "{PY} -m sparsenets figure {wildcards.fig} --tables {input} --options '{params.options}' "
        "--out {output.png} {output.pdf} > {log} 2>&1"
