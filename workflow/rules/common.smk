# Shared helpers: config validation, preset resolution, paths and target lists.
import json
import os
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


def _check_names():
    """Unknown models, methods and datasets fail here, before any job runs."""
    known = json.loads(
        subprocess.run(
            [PY, "-m", "sparsenets", "names"], check=True, capture_output=True, text=True
        ).stdout
    )
    for study, spec in STUDIES.items():
        for key, kind in (("models", "models"), ("methods", "methods"), ("datasets", "datasets")):
            for name in spec.get(key, []):
                if name not in known[kind]:
                    raise ValueError(
                        f"config key 'presets.{config['preset']}.studies.{study}.{key}': unknown {key[:-1]} "
                        f"{name!r}; known: {', '.join(known[kind])}"
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


def fmt_density(d):
    """The one spelling of a density in paths (sparsenets.experiments.format_density)."""
    return f"{float(d):.4g}"


def recipe_of(study):
    return config["recipes"][STUDIES[study]["recipe"]]


def run_dir(study, dataset, model, method, density, seed):
    return f"{RESULTS}/{study}/runs/{dataset}/{model}/{method}/d{fmt_density(density)}/s{seed}"


def study_runs(study):
    """Every (dataset, model, method, density, seed) a study trains."""
    s = STUDIES[study]
    return list(product(s["datasets"], s["models"], s["methods"], s["densities"], s["seeds"]))


def study_files(study, name):
    return [f"{run_dir(study, *r)}/{name}" for r in study_runs(study)]


def all_targets():
    targets = []
    if "phew" in STUDIES:
        targets += [f"{RESULTS}/phew/tables/{t}.csv" for t in ("runs", "epochs", "layers")]
        targets += expand(f"{RESULTS}/phew/figures/{{fig}}.{{ext}}", fig=PHEW_FIGURES, ext=["png", "pdf"])
    return targets
