# Shared helpers: config validation, preset resolution, paths and target lists.
import json
import math
import os
import re
import subprocess
import sys
from itertools import product
from pathlib import Path

from snakemake.utils import validate


validate(config, "../schemas/config.schema.yaml")

PY = sys.executable  # the interpreter running snakemake: the project's venv
DATA = config["data_dir"]
RESULTS = config["results_dir"]
LOGS = f"{RESULTS}/logs"


def _preset():
    name = config["preset"]
    if name not in config["presets"]:
        raise ValueError(
            f"config key 'preset': {name!r} is not a preset; choose one of {', '.join(sorted(config['presets']))}"
        )
    preset = config["presets"][name]
    for study, spec in preset["studies"].items():
        if spec["recipe"] not in config["recipes"]:
            raise ValueError(
                f"config key 'presets.{name}.studies.{study}.recipe': {spec['recipe']!r} is not a recipe; "
                f"choose one of {', '.join(sorted(config['recipes']))}"
            )
    return preset


PRESET = _preset()
STUDIES = PRESET["studies"]


def _known_names():
    """The registries' names (models, methods, datasets, topologies). A cluster job parses this file
    again: it reads what the submitting process found instead of importing torch once more."""
    cache = Path(".snakemake/sparsenets-names.json")
    if "SLURM_JOB_ID" in os.environ and cache.exists():
        return json.loads(cache.read_text())
    out = subprocess.run([PY, "-m", "sparsenets", "names"], check=True, capture_output=True, text=True).stdout
    cache.parent.mkdir(exist_ok=True)
    cache.write_text(out)
    return json.loads(out)


KNOWN = _known_names()


LIKE = "random-like-"  # random-like-M: random wiring with the layer densities of M's run (masks.smk)


def _check_names():
    """Unknown models, methods and datasets fail here, before any job runs."""
    for study, spec in STUDIES.items():
        for key, kind in (("models", "models"), ("methods", "methods"), ("datasets", "datasets")):
            known = KNOWN[kind] + (["imp"] + KNOWN["topologies"] if kind == "methods" else [])
            for name in spec.get(key, []):
                if key == "methods" and name.startswith(LIKE):
                    source = name.removeprefix(LIKE)
                    if source not in spec["methods"] or source.startswith(LIKE):
                        raise ValueError(
                            f"config key 'presets.{config['preset']}.studies.{study}.methods': {name!r} copies the "
                            f"layer densities of method {source!r}, which this study does not list"
                        )
                elif name not in known:
                    raise ValueError(
                        f"config key 'presets.{config['preset']}.studies.{study}.{key}': unknown {key[:-1]} "
                        f"{name!r}; known: {', '.join(known)}"
                    )


_check_names()

TRACKING_URI = (
    os.environ.get("SPARSENETS_TRACKING_URI")
    or config.get("tracking", {}).get("uri")
    or f"sqlite:///{Path(RESULTS).resolve() / 'mlflow.db'}"
)
# Jobs read these from the environment, so changing them reruns nothing (DESIGN.md).
os.environ["SPARSENETS_TRACKING_URI"] = TRACKING_URI
if "SPARSENETS_GIT_COMMIT" not in os.environ:
    _git = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=workflow.basedir, capture_output=True, text=True
    )
    os.environ["SPARSENETS_GIT_COMMIT"] = _git.stdout.strip() or "unknown"


envvars:
    "SPARSENETS_TRACKING_URI",
    "SPARSENETS_GIT_COMMIT",


wildcard_constraints:
    study=r"[a-z]+",
    dataset=r"[a-z0-9-]+",
    model=r"[a-z0-9-]+",
    method=r"[a-z0-9-]+",
    density=r"[0-9.]+(e-[0-9]+)?",
    seed=r"[0-9]+",
    source=r"[a-z0-9-]+",


def fmt_density(d):
    """The one spelling of a density in paths (sparsenets.experiments.format_density)."""
    return f"{float(d):.4g}"


def recipe_of(study):
    return config["recipes"][STUDIES[study]["recipe"]]


def densities_of(study):
    """PHEW lists densities; the Deconstructing study uses IMP's levels, density (1 - rate)^L."""
    s = STUDIES[study]
    if "imp" in s:
        return [(1 - s["imp"]["rate"]) ** level for level in s["imp"]["levels"]]
    return s["densities"]


def level_of(study, density):
    """The IMP level a density wildcard stands for (it must be one of (1 - rate)^L exactly)."""
    rate = STUDIES[study]["imp"]["rate"]
    level = round(math.log(float(density)) / math.log(1 - rate))
    if fmt_density((1 - rate) ** level) != density:
        raise ValueError(f"density {density} is not an IMP level of rate {rate}")
    return level


def plan(study, method):
    """How a method trains: the mask it starts from, its topology and the topology's options."""
    options = STUDIES[study].get("method_options", {}).get(method, {})
    frozen = re.fullmatch(r"dnw-freeze(\d+)", method)
    if frozen:
        return {"mask": config["dynamic_init"], "topology": "dnw", "options": {"freeze_epoch": int(frozen[1])}}
    if method in KNOWN["topologies"]:
        return {"mask": config["dynamic_init"], "topology": method, "options": options}
    return {"mask": method, "topology": "static", "options": {}}


def run_dir(study, dataset, model, method, density, seed, variant=""):
    base = f"{RESULTS}/{study}/runs/{dataset}/{model}/{method}/d{fmt_density(density)}"
    return f"{base}/{variant}/s{seed}" if variant else f"{base}/s{seed}"


def study_runs(study, methods=None, densities=None):
    """Every (dataset, model, method, density, seed) of a study, or of some of its methods and densities."""
    s = STUDIES[study]
    return list(
        product(s["datasets"], s["models"], methods or s["methods"], densities or densities_of(study), s["seeds"])
    )


def freeze_runs(study):
    s = STUDIES[study]
    methods = [f"dnw-freeze{k}" for k in s.get("freeze_epochs", [])]
    return study_runs(study, methods, [focus_density(study)]) if methods else []


def focus_density(study):
    return (1 - STUDIES[study]["imp"]["rate"]) ** STUDIES[study]["focus_level"]


def files(runs, name, study, variant=""):
    return [f"{run_dir(study, *r, variant=variant)}/{name}" for r in runs]


def table_inputs(study, kind):
    """The run files each tidy table is built from."""
    runs = study_runs(study)
    if study == "phew":
        return files(runs, "structure.json" if kind == "layers" else "metrics.json", study)
    if kind == "runs":
        return files(runs, "metrics.json", study) + files(runs, "metrics.json", study, "reinit") + files(
            freeze_runs(study), "metrics.json", study
        )
    if kind == "sensitivity":  # at the focus density, which the figure and claim C5 read
        return [f"{RESULTS}/{study}/sensitivity/{'/'.join(map(str, r[:3]))}/d{fmt_density(r[3])}/s{r[4]}/curve.json"
                for r in study_runs(study, densities=[focus_density(study)])]
    dynamic = [m for m in STUDIES[study]["methods"] if plan(study, m)["topology"] != "static"]
    if kind == "indegree":
        return files(study_runs(study, ["dnw"], [focus_density(study)]), "structure.json", study)
    if kind == "overlap":
        return files(study_runs(study, dynamic), "structure.json", study)
    raise ValueError(f"no table {kind!r} for study {study!r}")


TABLES = {
    "phew": ["runs", "epochs", "layers"],
    "deconstructing": ["runs", "sensitivity", "indegree", "overlap"],
}


def all_targets():
    targets = []
    for study in STUDIES:
        targets += [f"{RESULTS}/{study}/tables/{t}.csv" for t in TABLES[study]]
        targets += expand(f"{RESULTS}/{study}/figures/{{fig}}.{{ext}}", fig=FIGURES[study], ext=["png", "pdf"])
    targets += [f"{RESULTS}/claims.md", f"{RESULTS}/claims.csv"]
    return targets
