# Stage 3: training runs under a mask, tracked in MLflow.


rule train:
    input:
        data=f"{DATA}/{{dataset}}.npz",
        mask=rules.mask.output[0],
        tracking=ancient(rules.mlflow_init.output[0]),
    output:
        metrics=f"{RESULTS}/{{study}}/runs/{{dataset}}/{{model}}/{{method}}/d{{density}}/s{{seed}}/metrics.json",
        model=f"{RESULTS}/{{study}}/runs/{{dataset}}/{{model}}/{{method}}/d{{density}}/s{{seed}}/model.pt",
        mask=f"{RESULTS}/{{study}}/runs/{{dataset}}/{{model}}/{{method}}/d{{density}}/s{{seed}}/mask.pt",
        structure=f"{RESULTS}/{{study}}/runs/{{dataset}}/{{model}}/{{method}}/d{{density}}/s{{seed}}/structure.json",
    log:
        f"{LOGS}/{{study}}/runs/{{dataset}}/{{model}}/{{method}}/d{{density}}/s{{seed}}.log",
    threads: config["threads_per_job"]
    params:
        recipe=lambda w: json.dumps(recipe_of(w.study)),
        device=config["device"],
        out_dir=lambda w, output: str(Path(output.metrics).parent),
    shell:
        "{PY} -m sparsenets train --study {wildcards.study} --dataset {wildcards.dataset} --data {input.data} "
        "--model {wildcards.model} --method {wildcards.method} --density {wildcards.density} "
        "--seed {wildcards.seed} --mask {input.mask} --recipe '{params.recipe}' --device {params.device} "
        "--threads {threads} --out-dir {params.out_dir} > {log} 2>&1"
