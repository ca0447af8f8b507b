# Stage 2: masks built at initialisation, one per (dataset, model, method, density, seed).


rule mask:
    input:
        data=f"{DATA}/{{dataset}}.npz",
    output:
        f"{RESULTS}/{{study}}/masks/{{dataset}}/{{model}}/{{method}}/d{{density}}/s{{seed}}.pt",
    log:
        f"{LOGS}/{{study}}/masks/{{dataset}}/{{model}}/{{method}}/d{{density}}/s{{seed}}.log",
    params:
        options=lambda w: json.dumps(STUDIES[w.study].get("method_options", {}).get(w.method, {})),
        device=config["device"],
    shell:
        "{PY} -m sparsenets mask --dataset {wildcards.dataset} --data {input.data} --model {wildcards.model} "
        "--method {wildcards.method} --density {wildcards.density} --seed {wildcards.seed} "
        "--options '{params.options}' --device {params.device} --out {output} > {log} 2>&1"
