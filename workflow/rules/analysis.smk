# Stage 4: tidy tables, one row per run (runs), per run and epoch (epochs), per run and layer (layers).


rule runs_table:
    input:
        lambda w: study_files(w.study, "metrics.json"),
    output:
        f"{RESULTS}/{{study}}/tables/runs.csv",
    log:
        f"{LOGS}/{{study}}/tables/runs.log",
    shell:
        "{PY} -m sparsenets table --kind runs --out {output} {input} > {log} 2>&1"


rule epochs_table:
    input:
        lambda w: study_files(w.study, "metrics.json"),
    output:
        f"{RESULTS}/{{study}}/tables/epochs.csv",
    log:
        f"{LOGS}/{{study}}/tables/epochs.log",
    shell:
        "{PY} -m sparsenets table --kind epochs --out {output} {input} > {log} 2>&1"


rule layers_table:
    input:
        lambda w: study_files(w.study, "structure.json"),
    output:
        f"{RESULTS}/{{study}}/tables/layers.csv",
    log:
        f"{LOGS}/{{study}}/tables/layers.log",
    shell:
        "{PY} -m sparsenets table --kind layers --out {output} {input} > {log} 2>&1"
