# Shared helpers: config validation, the preset's jobs (sparsenets.study: the one spelling of the run grid)
# and the lookups that give every rule its inputs and its command line (params.argv) from the job its wildcards name.
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

import sparsenets.study as grid  # src/sparsenets/study.py: expand(config) -> every job of the preset
from sparsenets.configcheck import ConfigError, explain


try:
    validate(config, "../schemas/config.schema.yaml")  # also fills in the schema's defaults
except WorkflowError:  # its report is the whole schema (or config): name the key, value and what is allowed
    raise ConfigError(explain(config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml")) from None

PY = sys.executable  # the interpreter running snakemake: the project's venv
PATHS = grid.Paths(config["results_dir"], config["data_dir"])  # PATHS("mask", run=RUN): a rule's pattern
PRESET_NAME, PRESET = grid.preset_of(config)
STUDIES = grid.studies(config)  # a bad preset, protocol or recipe fails here, naming its key


grid.check_names(config)  # unknown models, methods and datasets fail here, before any job runs
JOBS = grid.expand(config)
JOB_AT = grid.by_output(JOBS)

TRACKING_URI = (
    os.environ.get("SPARSENETS_TRACKING_URI")
    or config.get("tracking", {}).get("uri")
    or f"sqlite:///{Path(config['results_dir']).resolve() / 'mlflow.db'}"
)
# Jobs read these from the environment, so changing them reruns nothing.
os.environ["SPARSENETS_TRACKING_URI"] = TRACKING_URI
os.environ.setdefault(
    "SPARSENETS_TRACKING_OUTAGE_LIMIT_S", str(config.get("tracking", {}).get("outage_limit_s", 600))
)
if "SPARSENETS_GIT_COMMIT" not in os.environ:  # "<sha>", "<sha>-dirty" or "unknown" (sparsenets.provenance)
    from sparsenets.provenance import describe_commit

    os.environ["SPARSENETS_GIT_COMMIT"] = describe_commit(workflow.basedir)
os.environ["SPARSENETS_PRESET"] = PRESET_NAME  # each MLflow run's tag `preset` (sparsenets.tracking)


envvars:
    "SPARSENETS_TRACKING_URI",
    "SPARSENETS_TRACKING_OUTAGE_LIMIT_S",
    "SPARSENETS_GIT_COMMIT",
    "SPARSENETS_PRESET",


wildcard_constraints:
    study=r"[a-z][a-z0-9-]*",
    dataset=r"[a-z0-9-]+",
    model=r"[a-z0-9-]+",
    method=r"[a-z0-9-]+",
    density=r"[0-9.]+(e-[0-9]+)?",
    seed=r"[0-9]+",
    source=r"[a-z0-9-]+",


RUN = grid.Run.pattern()  # {dataset}/{model}/{method}/d{density}/s{seed}


def gpu_slots(w):
    """The GPU slots a job of this model takes (runs_per_gpu; sparsenets.study.gpu_share): `--resources
    gpu_slots=N*S` lets N GPUs run S slots' worth of jobs each. Nothing on a CPU-only setup (gpus_per_job 0)."""
    return grid.gpu_share(config, w.model)[0] if config["gpus_per_job"] else 0


def gpu_job_cpus(w, threads):
    """SLURM's --cpus-per-task of a GPU job: its torch threads and one more for the thread that feeds MLflow
    (the GPU step itself needs the main thread)."""
    return threads + 1 if config["gpus_per_job"] else threads


def job_of(kinds, pattern):
    """The function from a rule's wildcards to its job: the one whose output `pattern` names. None when that
    file is a job of another kind (a rule that loses a ruleorder is still asked for its inputs)."""

    def find(w):
        path = pattern.format(**dict(w.items()))
        if path not in JOB_AT:
            raise ValueError(f"{path} is no file of preset {PRESET_NAME} (sparsenets.study.expand)")
        job = JOB_AT[path]
        return job if job.kind in kinds else None

    return find


def lookup(kinds, pattern, section, name):
    """A function from a rule's wildcards to `name` in the inputs of the job they name."""
    find = job_of((kinds,) if isinstance(kinds, str) else kinds, pattern)

    def get(w):
        job = find(w)
        if job is None:  # never run for this file (another rule makes it): no inputs
            return []
        value = getattr(job, section)[name]
        return list(value) if isinstance(value, tuple) else value

    return get


def inputs(kinds, pattern, *names):
    return {name: lookup(kinds, pattern, "inputs", name) for name in names}


def argv(kinds, pattern, **given):
    """A rule's params.argv: the command line of the job its wildcards name (Job.command: sparsenets.commands), with
    the job's threads and `given` (what the workflow knows and the job does not)."""
    find = job_of((kinds,) if isinstance(kinds, str) else kinds, pattern)

    def get(w, threads):
        job = find(w)
        return "" if job is None else job.command(threads=threads, **given).to_argv()

    return get

