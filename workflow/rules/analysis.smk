# Stage 4: analyses of trained runs, and tidy tables (one row per run, per run and epoch, per layer, ...).


rule sensitivity:
    # Further pruning of a trained run, by magnitude and at random, evaluated without retraining.
    input:
        data=f"{DATA}/{{dataset}}.npz",
        model=f"{RESULTS}/{{study}}/runs/{{dataset}}/{{model}}/{{method}}/d{{density}}/s{{seed}}/model.pt",
        mask=f"{RESULTS}/{{study}}/runs/{{dataset}}/{{model}}/{{method}}/d{{density}}/s{{seed}}/mask.pt",
    output:
        f"{RESULTS}/{{study}}/sensitivity/{{dataset}}/{{model}}/{{method}}/d{{density}}/s{{seed}}/curve.json",
    log:
        f"{LOGS}/{{study}}/sensitivity/{{dataset}}/{{model}}/{{method}}/d{{density}}/s{{seed}}.log",
    threads: config["threads_per_job"]
    resources:
        gpu=config["gpus_per_job"],
    params:
        fractions=lambda w: " ".join(map(str, STUDIES[w.study]["sensitivity_fractions"])),
        run_dir=lambda w, input: str(Path(input.model).parent),
        device=config["device"],
        precision=lambda w: recipe_of(w.study).get("precision", "auto"),
    shell:
        "{PY} -m sparsenets sensitivity --run-dir {params.run_dir} --data {input.data} "
        "--fractions {params.fractions} --precision {params.precision} --seed {wildcards.seed} "
        "--device {params.device} --threads {threads} "
        "--out {output} > {log} 2>&1"


rule table:
    input:
        lambda w: table_inputs(w.study, w.kind),
    output:
        f"{RESULTS}/{{study}}/tables/{{kind}}.csv",
    log:
        f"{LOGS}/{{study}}/tables/{{kind}}.log",
    wildcard_constraints:
        kind="runs|epochs|layers|sensitivity|indegree|overlap",
    shell:
        "{PY} -m sparsenets table --kind {wildcards.kind} --out {output} {input} > {log} 2>&1"
