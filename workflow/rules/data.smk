# Stage 1: datasets. data/{dataset}.npz is an open format: a file already there is used as it is.


rule dataset:
    output:
        f"{DATA}/{{dataset}}.npz",
    log:
        f"{LOGS}/data/{{dataset}}.log",
    shell:
        "{PY} -m sparsenets data --dataset {wildcards.dataset} --out {output} > {log} 2>&1"


rule mlflow_init:
    # Creates the store and experiments once, before the jobs fan out (parallel migrations fail).
    output:
        f"{RESULTS}/.tracking-ready.json",
    log:
        f"{LOGS}/mlflow_init.log",
    params:
        experiments=lambda w: " ".join(STUDIES),
    shell:
        "{PY} -m sparsenets mlflow-init --experiments {params.experiments} "
        "--out {output} > {log} 2>&1"
