# Stage 2: masks. Built at initialisation (one per dataset, model, method, density, seed), or, for
# IMP, by pruning the previous level's trained run.


FIRST_LAYER_DENSE = ("random", "random-erk")  # the uniform methods a first-layer-dense layer policy changes


def mask_options(w):
    """The study's method options, plus first_layer_dense for the uniform methods under that layer policy."""
    study = STUDIES[w.study]
    options = dict(study.get("method_options", {}).get(w.method, {}))
    if study.get("layer_policy", "global") == "first-layer-dense" and w.method in FIRST_LAYER_DENSE:
        options["first_layer_dense"] = True
    return json.dumps(options)


rule mask:
    input:
        data=f"{DATA}/{{dataset}}.npz",
    output:
        f"{RESULTS}/{{study}}/masks/{{dataset}}/{{model}}/{{method}}/d{{density}}/s{{seed}}.pt",
    log:
        f"{LOGS}/{{study}}/masks/{{dataset}}/{{model}}/{{method}}/d{{density}}/s{{seed}}.log",
    threads: config["threads_per_job"]
    resources:
        gpu=config["gpus_per_job"],  # data-dependent methods and SynFlow run on the job's device
    params:
        options=mask_options,
        device=config["device"],
    shell:
        "{PY} -m sparsenets mask --dataset {wildcards.dataset} --data {input.data} --model {wildcards.model} "
        "--method {wildcards.method} --density {wildcards.density} --seed {wildcards.seed} "
        "--options '{params.options}' --device {params.device} --threads {threads} --out {output} > {log} 2>&1"


def imp_previous(w):
    """Level L prunes the trained run of level L-1; level 1 prunes the dense run (random at density 1)."""
    level = level_of(w.study, w.density)
    if level == 1:
        return run_dir(w.study, w.dataset, w.model, "random", 1.0, w.seed)
    rate = STUDIES[w.study]["imp"]["rate"]
    return run_dir(w.study, w.dataset, w.model, "imp", (1 - rate) ** (level - 1), w.seed)


ruleorder: imp_mask > mask


rule imp_mask:
    input:
        model=lambda w: f"{imp_previous(w)}/model.pt",
        mask=lambda w: f"{imp_previous(w)}/mask.pt",
    output:
        f"{RESULTS}/{{study}}/masks/{{dataset}}/{{model}}/imp/d{{density}}/s{{seed}}.pt",
    log:
        f"{LOGS}/{{study}}/masks/{{dataset}}/{{model}}/imp/d{{density}}/s{{seed}}.log",
    params:
        rate=lambda w: STUDIES[w.study]["imp"]["rate"],
        run_dir=imp_previous,
    shell:
        "{PY} -m sparsenets imp-mask --run-dir {params.run_dir} --rate {params.rate} --out {output} > {log} 2>&1"


ruleorder: mask_layer_matched > mask


rule mask_layer_matched:
    # The per-layer kept counts of another method's final structure (same density and seed), rewired at random.
    input:
        data=f"{DATA}/{{dataset}}.npz",
        like=lambda w: f"{run_dir(w.study, w.dataset, w.model, w.source, w.density, w.seed)}/mask.pt",
    output:
        f"{RESULTS}/{{study}}/masks/{{dataset}}/{{model}}/{LIKE}{{source}}/d{{density}}/s{{seed}}.pt",
    log:
        f"{LOGS}/{{study}}/masks/{{dataset}}/{{model}}/{LIKE}{{source}}/d{{density}}/s{{seed}}.log",
    params:
        options=lambda w, input: json.dumps({"like": input.like}),
    shell:
        "{PY} -m sparsenets mask --dataset {wildcards.dataset} --data {input.data} --model {wildcards.model} "
        "--method random-like --density {wildcards.density} --seed {wildcards.seed} "
        "--options '{params.options}' --device cpu --out {output} > {log} 2>&1"
