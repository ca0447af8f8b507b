# Stage 1: datasets. data/{dataset}.npz is an open format: a file already there is used as it is.
# On a cluster both run where snakemake runs (the login node): compute nodes often have no internet.
localrules:
    dataset,
    mlflow_init,


rule dataset:
    output:
        PATHS("data"),
    log:
        PATHS("data_log"),
    params:
        argv=argv("dataset", PATHS("data")),
    shell:
        "{PY} -m sparsenets {params.argv} > {log} 2>&1"


rule mlflow_init:
    # Creates the store, the experiments and every method's parent run once, before the jobs fan out
    # (parallel migrations fail; jobs starting at once would race to create a parent).
    output:
        PATHS("tracking"),
    log:
        PATHS("tracking_log"),
    params:
        argv=argv("mlflow_init", PATHS("tracking")),
    shell:
        "{PY} -m sparsenets {params.argv} > {log} 2>&1"
