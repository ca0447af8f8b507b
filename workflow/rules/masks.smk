# Stage 2: masks. Built at initialisation (one per dataset, model, method, density, seed), or, for
# IMP, by pruning the previous level's trained run (sparsenets.study: Grid.mask, imp_mask, layer_matched_mask).

MASK = PATHS("mask", run=RUN)


rule mask:
    input:
        **inputs("mask", MASK, "data", "previous"),  # previous: a nested method's next sparser mask (phew-res)
    output:
        MASK,
    log:
        PATHS("mask_log", run=RUN),
    threads: config["threads_per_job"]
    group:
        "masks"  # on a cluster many masks share one allocation (group-components in the slurm profile)
    resources:
        gpu=config["gpus_per_job"],  # data-dependent methods and SynFlow run on the job's device
        gpu_slots=gpu_slots,
        cpus_per_task=gpu_job_cpus,
    params:
        argv=argv("mask", MASK),
    shell:
        "{PY} -m sparsenets {params.argv} > {log} 2>&1"


IMP_MASK = PATHS("mask", run=grid.Run.pattern(method="imp"))

ruleorder: imp_mask > mask


rule imp_mask:
    # Level L prunes the trained run of level L-1; level 1 prunes the dense run (random at density 1).
    input:
        **inputs("imp_mask", IMP_MASK, "model", "mask"),
    output:
        IMP_MASK,
    log:
        PATHS("mask_log", run=grid.Run.pattern(method="imp")),
    params:
        argv=argv("imp_mask", IMP_MASK),
    shell:
        "{PY} -m sparsenets {params.argv} > {log} 2>&1"


MATCHED_MASK = PATHS("mask", run=grid.Run.pattern(method=f"{grid.LIKE}{{source}}"))

ruleorder: mask_layer_matched > mask


rule mask_layer_matched:
    # The per-layer kept counts of another method's final structure (same density and seed), rewired at random.
    input:
        **inputs("mask_layer_matched", MATCHED_MASK, "data", "like"),
    output:
        MATCHED_MASK,
    log:
        PATHS("mask_log", run=grid.Run.pattern(method=f"{grid.LIKE}{{source}}")),
    params:
        argv=argv("mask_layer_matched", MATCHED_MASK),
    shell:
        "{PY} -m sparsenets {params.argv} > {log} 2>&1"
