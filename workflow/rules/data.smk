# Stage 1: datasets. data/{dataset}.npz is an open format: a file already there is used as it is.


rule dataset:
    output:
        PATHS("data"),
    log:
        PATHS("data_log"),
    shell:
        "{PY} -m sparsenets data --dataset {wildcards.dataset} --out {output} > {log} 2>&1"


rule mlflow_init:
    # Creates the store and experiments once, before the jobs fan out (parallel migrations fail).
    output:
        PATHS("tracking"),
    log:
        PATHS("tracking_log"),
    params:
        **params("mlflow_init", PATHS("tracking"), "experiments"),
    shell:
        "{PY} -m sparsenets mlflow-init --experiments {params.experiments} "
        "--out {output} > {log} 2>&1"
