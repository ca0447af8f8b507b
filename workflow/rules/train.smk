# Stage 3: training runs under a mask (static, or moving with DNW / RigL), tracked in MLflow; and
# the same structures retrained from fresh weights (reinit).

RUN = "{dataset}/{model}/{method}/d{density}"
# What a scheduler reserves per training job: SLURM's --gpus, --time and --mem; locally the gpu
# count only bounds parallel jobs under `--resources gpu=N` (each job then claims its own device).
TRAINING_RESOURCES = dict(
    gpu=config["gpus_per_job"], runtime=PRESET["minutes_per_training_job"], mem_mb=8000
)


def mask_input(w):
    return f"{RESULTS}/{w.study}/masks/{w.dataset}/{w.model}/{plan(w.study, w.method)['mask']}/d{w.density}/s{w.seed}.pt"


def train_shell(variant):
    return (
        "{PY} -m sparsenets train --study {wildcards.study} --dataset {wildcards.dataset} --data {input.data} "
        "--model {wildcards.model} --method {wildcards.method} --density {wildcards.density} "
        "--seed {wildcards.seed} --mask {input.mask} --recipe '{params.recipe}' --device {params.device} "
        "--topology {params.topology} --topology-options '{params.options}' "
        f"--variant '{variant}' --init-weights '{{input.init}}' {{params.rewind}} "
        "--threads {threads} --out-dir {params.out_dir} > {log} 2>&1"
    )


def run_outputs(folder):
    return {name: f"{RESULTS}/{{study}}/runs/{folder}/{name}.{ext}" for name, ext in
            (("metrics", "json"), ("model", "pt"), ("mask", "pt"), ("structure", "json"))}


def rewound_weights(w):
    """IMP's levels restart from the dense run's weights after imp.rewind_step steps (0: its init)."""
    if w.method != "imp":
        return []
    return f"{run_dir(w.study, w.dataset, w.model, 'random', 1.0, w.seed)}/rewind.pt"


rule train:
    input:
        data=f"{DATA}/{{dataset}}.npz",
        mask=mask_input,
        init=rewound_weights,
        tracking=ancient(rules.mlflow_init.output[0]),
    output:
        **run_outputs(f"{RUN}/s{{seed}}"),
    log:
        f"{LOGS}/{{study}}/runs/{RUN}/s{{seed}}.log",
    threads: config["threads_per_job"]
    resources:
        **TRAINING_RESOURCES,
    params:
        recipe=lambda w: json.dumps(recipe_of(w.study)),
        topology=lambda w: plan(w.study, w.method)["topology"],
        options=lambda w: json.dumps(plan(w.study, w.method)["options"]),
        device=config["device"],
        out_dir=lambda w, output: str(Path(output.metrics).parent),
        rewind="",
    shell:
        train_shell("")


ruleorder: train_dense > train


use rule train as train_dense with:
    # The dense run IMP starts from (random at density 1) also keeps its weights at the rewind step.
    output:
        **run_outputs(f"{RUN}/s{{seed}}"),
        rewind=f"{RESULTS}/{{study}}/runs/{RUN}/s{{seed}}/rewind.pt",
    wildcard_constraints:
        method="random",
        density="1",
    params:
        rewind=lambda w: f"--rewind-step {STUDIES[w.study].get('imp', {}).get('rewind_step', 0)}",


rule train_reinit:
    # The final structure of a run, trained again (static) from fresh weights drawn from new seeds.
    input:
        data=f"{DATA}/{{dataset}}.npz",
        mask=f"{RESULTS}/{{study}}/runs/{RUN}/s{{seed}}/mask.pt",
        init=[],
        tracking=ancient(rules.mlflow_init.output[0]),
    output:
        **run_outputs(f"{RUN}/reinit/s{{seed}}"),
    log:
        f"{LOGS}/{{study}}/runs/{RUN}/reinit/s{{seed}}.log",
    threads: config["threads_per_job"]
    resources:
        **TRAINING_RESOURCES,
    params:
        recipe=lambda w: json.dumps(recipe_of(w.study)),
        topology="static",
        options="{}",
        rewind="",
        device=config["device"],
        out_dir=lambda w, output: str(Path(output.metrics).parent),
    shell:
        train_shell("reinit")
