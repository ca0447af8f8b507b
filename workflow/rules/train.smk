# Stage 3: training runs under a mask (static, or moving with DNW / RigL), tracked in MLflow; and
# the same structures retrained from fresh weights (reinit). sparsenets.study decides each run's mask,
# topology and options (Grid.train, Grid.reinit); the rules look them up.

REINIT = grid.Run.pattern(variant="reinit")  # {dataset}/{model}/{method}/d{density}/reinit/s{seed}
# What a scheduler reserves per training job: SLURM's --gpus, --time and --mem; locally the gpu
# count only bounds parallel jobs under `--resources gpu=N` (each job then claims its own device).
TRAINING_RESOURCES = dict(
    gpu=config["gpus_per_job"], gpu_slots=gpu_slots, cpus_per_task=gpu_job_cpus, runtime=PRESET["minutes_per_training_job"], mem_mb=8000
)


def run_outputs(run):
    return {name: f"{PATHS('run', run=run)}/{file}" for name, file in grid.RUN_FILES.items()}


TRAIN = run_outputs(RUN)["metrics"]


rule train:
    input:
        **inputs(("train", "train_dense"), TRAIN, "data", "mask", "init"),
        tracking=ancient(rules.mlflow_init.output[0]),
    output:
        **run_outputs(RUN),
    log:
        PATHS("run_log", run=RUN),
    threads: config["threads_per_job"]
    resources:
        **TRAINING_RESOURCES,
    params:
        argv=argv(("train", "train_dense"), TRAIN),
    shell:
        "{PY} -m sparsenets {params.argv} > {log} 2>&1"


ruleorder: train_dense > train


use rule train as train_dense with:
    # The dense run IMP starts from (random at density 1) also keeps its weights at the rewind step.
    output:
        **run_outputs(RUN),
        rewind=f"{PATHS('run', run=RUN)}/rewind.pt",
    wildcard_constraints:
        method="random",
        density=grid.DENSE,


PRUNE = grid.Run.pattern(variant="prune")  # {dataset}/{model}/{method}/d{density}/prune/s{seed}: method mag
PRUNE_METRICS = run_outputs(PRUNE)["metrics"]


rule train_prune:
    # mag's pruning phase: the dense run's weights pruned gradually by magnitude while training (cubic schedule).
    input:
        **inputs("train_prune", PRUNE_METRICS, "data", "mask", "init"),
        tracking=ancient(rules.mlflow_init.output[0]),
    output:
        **run_outputs(PRUNE),
    log:
        PATHS("run_log", run=PRUNE),
    threads: config["threads_per_job"]
    resources:
        **TRAINING_RESOURCES,
    params:
        argv=argv("train_prune", PRUNE_METRICS),
    wildcard_constraints:
        method=grid.MAG,
    shell:
        "{PY} -m sparsenets {params.argv} > {log} 2>&1"


REINIT_METRICS = run_outputs(REINIT)["metrics"]


rule train_reinit:
    # The final structure of a run, trained again (static) from fresh weights drawn from new seeds.
    input:
        **inputs("train_reinit", REINIT_METRICS, "data", "mask", "init"),
        tracking=ancient(rules.mlflow_init.output[0]),
    output:
        **run_outputs(REINIT),
    log:
        PATHS("run_log", run=REINIT),
    threads: config["threads_per_job"]
    resources:
        **TRAINING_RESOURCES,
    params:
        argv=argv("train_reinit", REINIT_METRICS),
    shell:
        "{PY} -m sparsenets {params.argv} > {log} 2>&1"
