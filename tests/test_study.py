"""The experiment grid (sparsenets.study): every job of a preset from config.yaml alone, in milliseconds; and,
through the snakemake CLI (marked `snakemake`), that the workflow runs exactly those jobs."""
from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from collections import Counter

import pytest
import yaml

from conftest import REPO, snakemake
from sparsenets import study
from sparsenets.study import DENSE, PROTOCOLS, TRAINING, Run, expand, targets

CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())

# Snakemake's dry-run job counts per rule before the grid moved into the package (`all` left out).
COUNTS = {
    # tiny: + phew-res (2 masks, 2 runs) and mag (the phew study's dense run and its mask, 2 pruning runs, 2 runs);
    # + the variant studies deconstructing-erk and deconstructing-global-layers (random, dnw, rigl and dnw frozen
    # after 0 and 1 epochs at the focus density: masks 2 + 1, runs 5 + 5, reinit 3 + 3, curves 3 + 3, 4 tables
    # and 4 figures each)
    "tiny": {"dataset": 1, "mlflow_init": 1, "mask": 27, "train": 44, "train_dense": 2, "imp_mask": 2,
             "mask_layer_matched": 2, "sensitivity": 11, "table": 15, "train_reinit": 16, "figure": 16, "claims": 1,
             "train_prune": 2, "paper_table": 4},
    # quick: PHEW with 3 seeds and the 4 methods its claims compare (4 x 3 densities x 3 seeds: 36 masks and runs)
    "quick": {"dataset": 1, "mlflow_init": 1, "mask": 45, "train": 81, "train_dense": 3, "imp_mask": 12,
              "mask_layer_matched": 6, "sensitivity": 15, "table": 7, "train_reinit": 30, "figure": 8, "claims": 1,
              "paper_table": 2},
    # paper: the phew study on vgg19, vgg19-nobn and resnet20 (CIFAR-10/100): 11 methods x 16 densities x 3 seeds
    # per network, phew-res and mag among them (mag: a dense run per seed, and a pruning run beside each run);
    # phew-tiny-imagenet on resnet18-tin and vgg19-nobn-tin: 432 masks and 432 runs per network (9 methods)
    "paper": {"dataset": 3, "mlflow_init": 1, "mask": 3780, "train": 4176, "train_dense": 21, "imp_mask": 54,
              "mask_layer_matched": 15, "sensitivity": 15, "table": 10, "train_reinit": 75, "figure": 12, "claims": 1,
              "paper_table": 3, "train_prune": 288},
}


def jobs_of(preset: str = "tiny", config: dict | None = None) -> dict[str, study.Job]:
    return {j.name: j for j in expand(config or CONFIG, preset)}


def with_study(name: str, spec: dict, preset: str = "tiny") -> dict:
    config = copy.deepcopy(CONFIG)
    config["presets"][preset]["studies"][name] = spec
    return config


# ------------------------------------------------------------------------------------------- counts
@pytest.mark.parametrize("preset", COUNTS)
def test_job_counts_per_kind_are_snakemakes(preset):
    # + mlflow_summary: one job per preset puts each study's figures and claims on its MLflow summary run;
    # + report: one page per preset, results/report.html (sparsenets.report)
    assert dict(Counter(j.kind for j in expand(CONFIG, preset))) == {**COUNTS[preset], "mlflow_summary": 1,
                                                                       "report": 1}


def test_each_output_has_one_job_and_every_input_is_made_by_a_job_of_the_grid():
    jobs = expand(CONFIG, "paper")
    outputs = [f for j in jobs for f in j.outputs.values()]
    assert len(outputs) == len(set(outputs))
    assert {f for j in jobs for f in j.files()} <= set(outputs)
    assert set(targets(jobs)) == {f for j in jobs if j.kind in ("table", "paper_table", "figure", "claims", "mlflow_summary",
                                                                     "report")
                                  for f in j.outputs.values()}


# ------------------------------------------------------------------------------------ names and paths
def test_a_mask_and_its_training_run_are_named_by_what_defines_them():
    jobs = jobs_of()
    mask = jobs["mask phew/digits/mlp/synflow/d0.05/s0"]
    assert mask.outputs == {"mask": "results/phew/masks/digits/mlp/synflow/d0.05/s0.pt"}
    assert mask.inputs == {"data": "data/digits.npz", "previous": ()}
    assert mask.log == "results/logs/phew/masks/digits/mlp/synflow/d0.05/s0.log"
    assert mask.params == {"options": '{"iterations": 20}', "device": "auto"}
    run = jobs["train phew/digits/mlp/synflow/d0.05/s0"]
    assert run.run == Run("digits", "mlp", "synflow", "0.05", 0, study="phew") and run.run.name == "digits/mlp/synflow/d0.05/s0"
    assert run.run.parent == "phew/digits/mlp/synflow" and Run.parse(run.run.name, "phew") == run.run
    assert Run.from_path(f"{run.dir}/metrics.json") == run.run == Run.from_path(mask.output)
    assert run.dir == "results/phew/runs/digits/mlp/synflow/d0.05/s0"
    assert run.outputs == {k: f"{run.dir}/{f}" for k, f in study.RUN_FILES.items()}
    assert run.inputs == {"data": "data/digits.npz", "mask": mask.output, "init": (),
                          "tracking": "results/.tracking-ready.json"}
    assert json.loads(run.params["recipe"]) == CONFIG["recipes"]["tiny"]
    assert (run.params["topology"], run.params["options"], run.params["rewind_step"]) == ("static", "{}", None)
    assert run.params["out_dir"] == run.dir and run.log == "results/logs/phew/runs/digits/mlp/synflow/d0.05/s0.log"


def test_densities_are_spelled_with_four_significant_digits():
    assert [study.format_density(d) for d in (0.8 ** 10, 0.5 ** 2, 1.0, 0.01801)] == ["0.1074", "0.25", "1", "0.01801"]
    quick = {j.run.density for j in expand(CONFIG, "quick") if j.study == "deconstructing" and j.kind in TRAINING}
    assert quick == {"0.5", "0.25", "0.125", "0.0625", DENSE}


def test_topology_methods_start_from_dynamic_init_and_the_layer_policy_reaches_uniform_masks_only():
    jobs = jobs_of()
    dnw = jobs["train deconstructing/digits/convnet/dnw/d0.25/s0"]
    assert dnw.inputs["mask"] == "results/deconstructing/masks/digits/convnet/random/d0.25/s0.pt"
    assert (dnw.params["topology"], dnw.params["options"]) == ("dnw", "{}")
    rigl = jobs["train deconstructing/digits/convnet/rigl/d0.25/s0"]
    assert (rigl.params["topology"], rigl.params["options"]) == ("rigl", '{"delta_t": 5}')
    assert jobs["mask deconstructing/digits/convnet/random/d0.25/s0"].params["options"] == '{"first_layer_dense": true}'
    assert jobs["mask phew/digits/mlp/random/d0.05/s0"].params["options"] == "{}"  # PHEW's policy: global
    erk = jobs_of(config={**CONFIG, "dynamic_init": "random-erk"})
    assert erk["train deconstructing/digits/convnet/dnw/d0.25/s0"].inputs["mask"].endswith("/random-erk/d0.25/s0.pt")
    assert erk["mask deconstructing/digits/convnet/random-erk/d0.25/s0"].params["options"] == (
        '{"first_layer_dense": true}')


def test_variant_studies_train_only_what_their_choice_changes_under_the_other_reading():
    jobs = jobs_of()
    erk, flat = "deconstructing-erk", "deconstructing-global-layers"
    for name in (erk, flat):
        trained = {j.run.method for j in jobs.values() if j.study == name and j.kind == "train"}
        assert trained == {"random", "dnw", "rigl", "dnw-freeze0", "dnw-freeze1"}
        assert {j.run.density for j in jobs.values() if j.study == name and j.kind == "train"} == {"0.25"}
    # the study's own dynamic_init: DNW, RigL and frozen DNW start from ERK there, from random in the main study
    for method in ("dnw", "rigl", "dnw-freeze1"):
        assert jobs[f"train {erk}/digits/convnet/{method}/d0.25/s0"].inputs["mask"].endswith("/random-erk/d0.25/s0.pt")
    assert jobs[f"train {erk}/digits/convnet/random/d0.25/s0"].inputs["mask"].endswith("/random/d0.25/s0.pt")
    # the global layer policy: random (and so DNW and RigL) prunes the first conv too
    assert jobs[f"mask {flat}/digits/convnet/random/d0.25/s0"].params["options"] == "{}"
    options = {n: s["options"] for n, s in jobs["claims"].params["studies"].items()}
    assert {options[n]["sensitivity_ranking"] for n in ("deconstructing", erk, flat)} == {"global"}
    assert options["deconstructing"]["sensitivity_bn"] == "stale"


def test_method_kinds():
    options = {"delta_t": 5}
    assert study.plan("snip", options) == ("pruning", "snip", "static", {})
    assert study.plan("rigl", options) == ("topology", "random", "rigl", options)
    assert study.plan("dnw-freeze3", options, dynamic_init="random-erk") == (
        "frozen-dnw", "random-erk", "dnw", {"freeze_epoch": 3})
    assert study.plan("imp", options) == ("imp", "imp", "static", {})
    assert study.plan("random-like-imp", options) == ("layer-matched", "random-like-imp", "static", {})
    assert study.plan("mag", options) == ("mag", "mag", "static", {})
    assert study.plan("phew-res", options) == ("pruning", "phew-res", "static", {})
    assert study.plan("set", options, topologies=("dnw", "rigl", "set")).kind == "topology"


# --------------------------------------------------------------------------------------------- IMP
def test_imp_chain_trains_every_level_up_to_the_last_and_restarts_from_the_dense_runs_rewind_weights():
    jobs = jobs_of("quick")  # rate 0.5, levels 2 and 4: levels 1 and 3 are trained too
    runs = "results/deconstructing/runs/cifar10/convnet"
    for seed in (0, 1, 2):
        levels = {j.run.density for j in jobs.values() if j.kind == "train" and j.run.method == "imp"
                  and j.run.seed == seed}
        assert levels == {"0.5", "0.25", "0.125", "0.0625"}
        first = jobs[f"imp_mask deconstructing/cifar10/convnet/imp/d0.5/s{seed}"]
        assert first.inputs == {"model": f"{runs}/random/d1/s{seed}/model.pt", "mask": f"{runs}/random/d1/s{seed}/mask.pt"}
        assert first.params == {"rate": 0.5, "run_dir": f"{runs}/random/d1/s{seed}"}
        third = jobs[f"imp_mask deconstructing/cifar10/convnet/imp/d0.125/s{seed}"]
        assert third.params["run_dir"] == f"{runs}/imp/d0.25/s{seed}"
        level = jobs[f"train deconstructing/cifar10/convnet/imp/d0.125/s{seed}"]
        assert level.inputs["init"] == f"{runs}/random/d1/s{seed}/rewind.pt"
        assert level.inputs["mask"] == third.output
        dense = jobs[f"train_dense deconstructing/cifar10/convnet/random/d1/s{seed}"]
        assert dense.outputs["rewind"] == f"{runs}/random/d1/s{seed}/rewind.pt" and dense.params["rewind_step"] == 0
    reinit = {j.run.density for j in jobs.values() if j.kind == "train_reinit" and j.run.method == "imp"}
    assert reinit == {"0.25", "0.0625"}  # only the studied levels are retrained from fresh weights
    assert jobs_of()["train_dense deconstructing/digits/convnet/random/d1/s0"].params["rewind_step"] == 5


def test_a_density_that_is_no_imp_level_is_an_error():
    s = study.studies(CONFIG, "tiny")[1]
    assert s.level_of("0.25") == 2
    with pytest.raises(ValueError, match="0.3 is not an IMP level of rate 0.5"):
        s.level_of("0.3")


# ------------------------------------------------------------------------------------- phew-res and mag
def test_phew_res_masks_form_a_chain_from_the_sparsest_density_up():
    spec = {**CONFIG["presets"]["tiny"]["studies"]["phew"], "methods": ["phew", "phew-res"],
            "densities": [0.2, 0.01, 0.05]}  # listed in any order
    jobs = jobs_of(config=with_study("x", spec))
    masks = "results/x/masks/digits/mlp/phew-res"
    assert jobs["mask x/digits/mlp/phew-res/d0.01/s0"].inputs["previous"] == ()
    assert jobs["mask x/digits/mlp/phew-res/d0.05/s0"].inputs["previous"] == f"{masks}/d0.01/s0.pt"
    assert jobs["mask x/digits/mlp/phew-res/d0.2/s0"].inputs["previous"] == f"{masks}/d0.05/s0.pt"
    assert jobs["mask x/digits/mlp/phew/d0.2/s0"].inputs["previous"] == ()  # phew builds each density alone
    assert jobs["train x/digits/mlp/phew-res/d0.2/s0"].inputs["mask"] == f"{masks}/d0.2/s0.pt"


def test_mag_prunes_the_dense_run_gradually_then_retrains_with_the_full_recipe():
    jobs = jobs_of()
    runs = "results/phew/runs/digits/mlp"
    dense = jobs["train_dense phew/digits/mlp/random/d1/s0"]  # the phew study lists no dense run: mag adds it
    prune = jobs["train_prune phew/digits/mlp/mag/d0.05/prune/s0"]
    assert prune.dir == f"{runs}/mag/d0.05/prune/s0" and prune.run.variant == "prune"
    assert (prune.inputs["mask"], prune.inputs["init"]) == (dense.outputs["mask"], dense.outputs["model"])
    assert (prune.params["topology"], json.loads(prune.params["options"])) == (study.GRADUAL, {"density": 0.05})
    tiny = CONFIG["presets"]["tiny"]["studies"]["phew"]["mag"]["prune_epochs"]
    assert json.loads(prune.params["recipe"]) == {**CONFIG["recipes"]["tiny"], "epochs": tiny, "milestones": []}
    run = jobs["train phew/digits/mlp/mag/d0.05/s0"]
    assert (run.inputs["mask"], run.inputs["init"]) == (prune.outputs["mask"], prune.outputs["model"])
    assert (run.params["topology"], json.loads(run.params["recipe"])) == ("static", CONFIG["recipes"]["tiny"])
    assert f"{runs}/mag/d0.05/s0/metrics.json" in jobs["table phew/runs"].inputs["files"]
    assert not any("/prune/" in f for f in jobs["table phew/runs"].inputs["files"])  # a phase, not a result


def test_mag_reuses_the_dense_run_a_deconstructing_study_trains_and_prunes_10_epochs_by_default():
    spec = {**CONFIG["presets"]["tiny"]["studies"]["deconstructing"]}
    spec["methods"] = [*spec["methods"], "mag"]
    jobs = expand(with_study("deconstructing", spec), "tiny")
    dense = [j for j in jobs if j.study == "deconstructing" and j.kind == "train_dense"]
    prune = [j for j in jobs if j.study == "deconstructing" and j.kind == "train_prune"]
    assert len(dense) == 1 and {j.inputs["init"] for j in prune} == {dense[0].outputs["model"]}
    assert {json.loads(j.params["recipe"])["epochs"] for j in prune} == {10}


# ------------------------------------------------------------------------- layer-matched and frozen DNW
def test_layer_matched_mask_copies_the_source_runs_final_structure():
    job = jobs_of()["mask_layer_matched deconstructing/digits/convnet/random-like-dnw/d0.5/s0"]
    like = "results/deconstructing/runs/digits/convnet/dnw/d0.5/s0/mask.pt"
    assert job.inputs == {"data": "data/digits.npz", "like": like}
    assert job.params == {"options": json.dumps({"like": like})}
    assert job.output == "results/deconstructing/masks/digits/convnet/random-like-dnw/d0.5/s0.pt"
    run = jobs_of()["train deconstructing/digits/convnet/random-like-dnw/d0.5/s0"]
    assert run.inputs["mask"] == job.output and run.params["topology"] == "static"


def test_frozen_dnw_runs_are_at_the_focus_density_only():
    frozen = [j for j in expand(CONFIG, "quick") if j.run and j.run.method.startswith("dnw-freeze")]
    assert {j.kind for j in frozen} == {"train"} and {j.run.density for j in frozen} == {"0.0625"}
    assert sorted({j.run.method for j in frozen}) == ["dnw-freeze0", "dnw-freeze1", "dnw-freeze3"]
    one = jobs_of("quick")["train deconstructing/cifar10/convnet/dnw-freeze3/d0.0625/s1"]
    assert (one.params["topology"], json.loads(one.params["options"])) == ("dnw", {"freeze_epoch": 3})
    assert one.inputs["mask"] == "results/deconstructing/masks/cifar10/convnet/random/d0.0625/s1.pt"


def test_sensitivity_curves_are_at_the_focus_density_only():
    curves = [j for j in expand(CONFIG, "paper") if j.kind == "sensitivity"]
    assert {j.run.density for j in curves} == {study.format_density(0.8 ** 10)}
    assert len(curves) == 5 * 3  # methods x seeds
    job = curves[0]
    assert job.inputs["model"] == f"{job.params['run_dir']}/model.pt"
    assert job.params["fractions"] == "0.0 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9"
    assert job.params["precision"] == "auto" and job.params["test_images"] == 0  # the paper preset: all test images
    quick = [j for j in expand(CONFIG, "quick") if j.kind == "sensitivity"]
    assert {j.params["test_images"] for j in quick} == {CONFIG["presets"]["quick"]["studies"]["deconstructing"].get(
        "sensitivity_test_images", 0)}


# ---------------------------------------------------------------------------- tables, figures, claims
def test_tables_figures_and_claims_come_from_the_protocol():
    jobs = jobs_of(config={**CONFIG, "only_studies": ["phew", "deconstructing"]})  # the variant studies left out
    indegree = jobs["figure deconstructing/indegree"]
    assert indegree.inputs["tables"] == ("results/deconstructing/tables/indegree.csv",
                                         "results/deconstructing/tables/overlap.csv")
    assert json.loads(indegree.params["options"]) == {"density": 0.25, "preset": "tiny"}  # named in its caption
    assert json.loads(jobs["figure phew/layer_widths"].params["options"]) == {"density": 0.05, "preset": "tiny"}
    assert json.loads(jobs["figure phew/accuracy_vs_density"].params["options"]) == {"preset": "tiny"}
    overlap = jobs["table deconstructing/overlap"].inputs["files"]
    assert {f.split("/")[5] for f in overlap} == {"dnw", "rigl"} and all(f.endswith("structure.json") for f in overlap)
    runs = jobs["table deconstructing/runs"].inputs["files"]
    assert len(runs) == 10 + 10 + 2 and sum("/reinit/" in f for f in runs) == 10
    claims = jobs["claims"]
    assert {n: s["options"] for n, s in claims.params["studies"].items()} == {
        "phew": {"claim_density_max": 0.11},
        "deconstructing": {"focus_density": 0.25, "sensitivity_ranking": "global", "sensitivity_bn": "stale",
                           "freeze_claim_epoch": 1, "equivalence_margin": 0.01}}
    assert {n: (s["protocol"], s["tables"]) for n, s in claims.params["studies"].items()} == {
        "phew": ("phew", {"runs": "results/phew/tables/runs.csv", "layers": "results/phew/tables/layers.csv"}),
        "deconstructing": ("deconstructing", {"runs": "results/deconstructing/tables/runs.csv",
                                              "sensitivity": "results/deconstructing/tables/sensitivity.csv",
                                              "overlap": "results/deconstructing/tables/overlap.csv"})}
    assert claims.params["preset"] == "tiny"
    init = jobs["mlflow_init"].params  # the experiments, and one parent run per study, dataset, model and method
    assert init["experiments"] == "phew deconstructing"
    assert init["parents"].split() == list(dict.fromkeys(
        f"{j.study}/{j.run.dataset}/{j.run.model}/{j.run.method}" for j in jobs.values() if j.kind in TRAINING))
    summary = jobs["mlflow_summary"]
    assert summary.inputs["claims"] == "results/claims.md" and set(summary.inputs["figures"]) == {
        f for j in jobs.values() if j.kind == "figure" for f in j.outputs.values()}


def test_protocol_registry():
    from sparsenets import claims

    assert list(PROTOCOLS) == ["phew", "deconstructing"]
    for p in PROTOCOLS.values():
        assert all(set(f.tables) <= set(p.tables) for f in p.figures.values()), p.name
        assert set(p.claims.values()) <= set(p.tables), p.name
    ids = [cid for p in PROTOCOLS.values() for cid in p.claims]
    assert ids == list(claims.CLAIMS)  # every claim judged by exactly one protocol, in order
    assert study.TABLES == ("runs", "epochs", "layers", "sensitivity", "indegree", "overlap")


def test_the_schema_checks_a_study_by_each_registered_protocol():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())["$defs"]
    assert schema["study"]["properties"]["protocol"]["enum"] == list(PROTOCOLS)
    branches = {b["if"]["properties"]["protocol"]["const"]: b["then"]["$ref"] for b in schema["study"]["allOf"]}
    assert branches == {p: f"#/$defs/{p}" for p in PROTOCOLS}
    assert all(schema[p]["properties"]["protocol"] == {"const": p} for p in PROTOCOLS)


def test_topologies_match_the_registry():
    from sparsenets import topology

    topology.load_all()
    assert sorted(study.TOPOLOGIES) == topology.methods()
    assert study.GRADUAL in topology.TOPOLOGIES and study.GRADUAL not in topology.methods()  # mag's phase only


def test_nested_methods_match_the_registry():
    from sparsenets import pruning

    pruning.load_all()
    assert sorted(study.NESTED) == sorted(m.name for m in pruning.METHODS.values() if m.nested)


@pytest.mark.parametrize("protocol, base", [("phew", "phew"), ("deconstructing", "deconstructing")])
def test_a_second_study_of_a_protocol_yields_exactly_its_own_jobs(protocol, base):
    spec = copy.deepcopy(CONFIG["presets"]["tiny"]["studies"][base])
    name = f"{base}-two"
    before, after = expand(CONFIG, "tiny"), expand(with_study(name, spec), "tiny")
    own = [j for j in after if j.study == name]
    as_base = {(j.kind, j.key.removeprefix(f"{name}/")) for j in own}
    assert as_base == {(j.kind, j.key.removeprefix(f"{base}/")) for j in before if j.study == base}
    assert all(f.startswith(f"results/{name}/") or f.startswith("results/logs/") for j in own
               for f in [*j.outputs.values(), j.log])
    assert {f for j in own for f in j.files()} <= {f for j in after for f in j.outputs.values()}
    figures = {j.key for j in own if j.kind == "figure"}
    assert figures == {f"{name}/{f}" for f in PROTOCOLS[protocol].figures}
    shared = ("mlflow_init", "claims", "mlflow_summary", "report")
    untouched = {j.name: j for j in before if j.kind not in shared}
    assert untouched == {j.name: j for j in after if j.study != name and j.kind not in shared}
    page = json.loads({j.kind: j for j in after}["report"].params["context"])
    assert {f"{name}/{f}" for f in PROTOCOLS[protocol].figures} <= {f"{f['study']}/{f['fig']}" for f in page["figures"]}
    claims = {j.kind: j for j in after}["claims"]
    assert claims.params["studies"][name]["protocol"] == protocol
    assert claims.params["studies"][name]["tables"]["runs"] == f"results/{name}/tables/runs.csv"
    assert {j.kind: j for j in after}["mlflow_init"].params["experiments"].split() == [
        *CONFIG["presets"]["tiny"]["studies"], name]


def test_a_study_of_another_grid():
    spec = {"protocol": "phew", "datasets": ["cifar100"], "models": ["resnet20"], "methods": ["random", "phew"],
            "densities": [0.1], "seeds": [3], "recipe": "quick"}
    jobs = [j for j in expand(with_study("phew-cifar100", spec, "quick"), "quick") if j.study == "phew-cifar100"]
    assert Counter(j.kind for j in jobs) == {"mask": 2, "train": 2, "table": 3, "paper_table": 1, "figure": 4}
    assert {j.run.name for j in jobs if j.kind == "train"} == {"cifar100/resnet20/random/d0.1/s3",
                                                             "cifar100/resnet20/phew/d0.1/s3"}
    datasets = [j for j in expand(with_study("phew-cifar100", spec, "quick"), "quick") if j.kind == "dataset"]
    assert {j.key for j in datasets} == {"cifar10", "cifar100"}


# ------------------------------------------------------------------------------------------------ errors
def test_bad_protocol_preset_or_recipe_fails_naming_the_key():
    spec = {**CONFIG["presets"]["tiny"]["studies"]["phew"], "protocol": "phwe"}
    with pytest.raises(ValueError, match=r"config key 'presets\.tiny\.studies\.x\.protocol': 'phwe' is not a protocol"):
        expand(with_study("x", spec), "tiny")
    with pytest.raises(ValueError, match=r"config key 'preset': 'nope' is not a preset"):
        expand(CONFIG, "nope")
    spec = {**CONFIG["presets"]["tiny"]["studies"]["phew"], "recipe": "quik"}
    with pytest.raises(ValueError, match=r"'presets\.tiny\.studies\.x\.recipe': 'quik' is not a recipe"):
        expand(with_study("x", spec), "tiny")
    spec = {k: v for k, v in CONFIG["presets"]["tiny"]["studies"]["deconstructing"].items()
            if k != "sensitivity_fractions"}
    with pytest.raises(ValueError, match=r"'presets\.tiny\.studies\.x\.sensitivity_fractions' is missing"):
        expand(with_study("x", spec), "tiny")


def test_unknown_names_fail_naming_the_key():
    known = {"models": ["mlp", "convnet"], "methods": ["random", "random-erk", "magnitude", "snip", "grasp", "synflow",
             "synflow-l2", "phew", "phew-reinit", "phew-res", "random-like"], "datasets": ["digits"],
             "topologies": ["dnw", "rigl"]}
    study.check_names(CONFIG, known, "tiny")
    bad = with_study("x", {**CONFIG["presets"]["tiny"]["studies"]["phew"], "models": ["mlp", "resnet21"]})
    with pytest.raises(ValueError, match=r"'presets\.tiny\.studies\.x\.models': unknown model 'resnet21'"):
        study.check_names(bad, known, "tiny")
    bad = with_study("x", {**CONFIG["presets"]["tiny"]["studies"]["deconstructing"], "methods": ["random-like-snip"]})
    with pytest.raises(ValueError, match="'random-like-snip' copies the layer densities of method 'snip'"):
        study.check_names(bad, known, "tiny")


def test_study_imports_no_torch():
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import sparsenets.study"],
                         capture_output=True, text=True, check=True)
    modules = [line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if "|" in line]
    assert "sparsenets.study" in modules
    assert not [m for m in modules if m.split(".")[0] in ("torch", "numpy", "pandas", "snakemake")]


# ------------------------------------------------------------------ the workflow runs exactly these jobs
def job_stats(text: str) -> dict[str, int]:
    """The first "Job stats" table of Snakemake's output, without `all` and the total."""
    table = text[text.index("Job stats:"):].split("total")[0]
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", table, re.M) if rule != "all"}


@pytest.mark.snakemake
@pytest.mark.parametrize("preset", ["tiny", "quick", "paper"])
def test_snakemakes_dry_run_has_the_grids_jobs(tmp_path, preset):
    proc = snakemake(tmp_path, "-n", "--quiet", "rules", "--config", f"preset={preset}")
    assert job_stats(proc.stdout) == dict(Counter(j.kind for j in expand(CONFIG, preset)))


@pytest.mark.snakemake
def test_a_study_added_to_a_copy_of_the_config_is_in_the_dag(tmp_path):
    spec = {"protocol": "phew", "datasets": ["digits"], "models": ["mlp"], "methods": ["random", "phew"],
            "densities": [0.1], "seeds": [0], "recipe": "tiny", "width_density": 0.1}
    config = with_study("phew-small", spec)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    proc = snakemake(tmp_path, "-n", "-p", "--configfile", str(tmp_path / "config.yaml"), "--config", "preset=tiny",
                     configfile=False)
    out = proc.stdout
    base = "results/phew-small"
    for method in spec["methods"]:
        assert f"{base}/masks/digits/mlp/{method}/d0.1/s0.pt" in out
        assert f"{base}/runs/digits/mlp/{method}/d0.1/s0/metrics.json" in out
        assert f"--dataset digits --data data/digits.npz --model mlp --method {method} " in out
        assert f"--study phew-small --mask {base}/masks/digits/mlp/{method}/d0.1/s0.pt " in out  # its training job
    for table in PROTOCOLS["phew"].tables:
        assert f"{base}/tables/{table}.csv" in out
    for fig in PROTOCOLS["phew"].figures:
        assert f"{base}/figures/{fig}.png" in out and f"{base}/figures/{fig}.pdf" in out
    assert '"phew-small": {"protocol": "phew", "tables": {"runs": "results/phew-small/tables/runs.csv"' in out
    assert "--experiments " + " ".join(config["presets"]["tiny"]["studies"]) in out  # phew-small last
    assert job_stats(out) == dict(Counter(j.kind for j in expand(config, "tiny")))
