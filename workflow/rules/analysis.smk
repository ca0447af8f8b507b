# Stage 4: analyses of trained runs, and tidy tables (one row per run, per run and epoch, per layer, ...).
# Which runs get curves and which files each table reads: sparsenets.study (the study's protocol).

CURVE = PATHS("curve", run=RUN)


rule sensitivity:
    # Further pruning of a trained run, by magnitude and at random, evaluated without retraining.
    input:
        **inputs("sensitivity", CURVE, "data", "model", "mask"),
    output:
        CURVE,
    log:
        PATHS("curve_log", run=RUN),
    threads: config["threads_per_job"]
    group:
        "curves"  # on a cluster many curves share one allocation (group-components in the slurm profile)
    resources:
        gpu=config["gpus_per_job"],
        gpu_slots=gpu_slots,
        cpus_per_task=gpu_job_cpus,
    params:
        argv=argv("sensitivity", CURVE),
    shell:
        "{PY} -m sparsenets {params.argv} > {log} 2>&1"


TABLE = PATHS("table")


rule table:
    input:
        lookup("table", TABLE, "inputs", "files"),
    output:
        TABLE,
    log:
        PATHS("table_log"),
    wildcard_constraints:
        kind="|".join(grid.TABLES),
    group:
        "tables"
    params:
        argv=argv("table", TABLE),
    shell:
        "{PY} -m sparsenets {params.argv} > {log} 2>&1"


PAPER_TABLE = PATHS("paper_table", ext="csv")


rule paper_table:
    # A method x density table for a paper (mean and 95 % interval over seeds), as CSV and booktabs LaTeX.
    input:
        lookup("paper_table", PAPER_TABLE, "inputs", "table"),
    output:
        csv=PAPER_TABLE,
        tex=PATHS("paper_table", ext="tex"),
    log:
        PATHS("paper_table_log"),
    wildcard_constraints:
        name="|".join(grid.PAPER_TABLES),
    group:
        "tables"
    params:
        argv=argv("paper_table", PAPER_TABLE),
    shell:
        "{PY} -m sparsenets {params.argv} > {log} 2>&1"
