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
        f"--variant '{variant}' "
        "--threads {threads} --out-dir {params.out_dir} > {log} 2>&1"
    )


def run_outputs(folder):
    return {name: f"{RESULTS}/{{study}}/runs/{folder}/{name}.{ext}" for name, ext in
            (("metrics", "json"), ("model", "pt"), ("mask", "pt"), ("structure", "json"))}


rule train:
    input:
        data=f"{DATA}/{{dataset}}.npz",
        mask=mask_input,
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
    shell:
        train_shell("")


rule train_reinit:
    # The final structure of a run, trained again (static) from fresh weights drawn from new seeds.
    input:
        data=f"{DATA}/{{dataset}}.npz",
        mask=f"{RESULTS}/{{study}}/runs/{RUN}/s{{seed}}/mask.pt",
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
        device=config["device"],
        out_dir=lambda w, output: str(Path(output.metrics).parent),
    shell:
        train_shell("reinit")
