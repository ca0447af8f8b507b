"""The experiment grid, spelled once: every job of a preset, from config.yaml alone.

`expand(config)` turns a preset's studies into `Job`s: masks (built at initialisation, phew-res's grown from
the next sparser density's, IMP levels pruned from the previous level's run, layer-matched random ones), training
runs (each method's run, the dense run IMP and mag start from, IMP's intermediate levels, mag's gradual pruning
run, reinit, DNW frozen after k epochs), sensitivity curves, tidy tables,
figures and the claims. A job is named by what defines it and carries the inputs, outputs, log and params its
Snakemake rule passes to `python -m sparsenets`: workflow/rules/*.smk only look jobs up, `plan` counts and
prices them, tests and benchmarks read them.

A study is data: its `protocol` (`PROTOCOLS`) decides which tables, figures and claims it yields, and its grid
(datasets, models, methods, densities or IMP levels, seeds, recipe) which runs. Decided here and nowhere else:
how a density is spelled, a run's identity (`Run`: its name, folder, tags and MLflow parent) and the files'
layout (`TEMPLATES`, read back by `locate`), IMP's levels and chain, how each kind of method trains (a pruning
method, a topology, IMP, random-like-M, frozen DNW: the kind is its entry's in `sparsenets.catalogue`), the mask
a topology starts from, the layer policy's option, which runs get sensitivity curves (the focus density's), and
the options of figures and claims.

No torch, no Snakemake: expanding the paper preset takes milliseconds.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import posixpath
import re
from dataclasses import dataclass, field
from itertools import product
from typing import Any, Callable, Mapping, NamedTuple, Sequence

from . import catalogue
from .catalogue import GRADUAL, LIKE, MAG

# What each method is comes from the catalogue (sparsenets.catalogue; its registries register against it).
TOPOLOGIES = tuple(catalogue.of_kind("topology"))  # the topologies a study may list (static and phases left out)
FROZEN = re.compile(catalogue.METHODS["dnw-freezeK"].pattern)  # DNW frozen after k epochs (the freezing study)
FIRST_LAYER_DENSE = tuple(m.name for m in catalogue.METHODS.values() if m.first_layer_dense)  # uniform methods
NESTED = tuple(m.name for m in catalogue.METHODS.values() if m.nested)  # each density grown from the next sparser
ORIGINAL = "original"  # a run itself (VARIANTS[0]): its name has no variant folder, its tags say "original"
VARIANTS = (ORIGINAL, "reinit", "prune")  # a run, its structure retrained from fresh weights, mag's pruning phase
DENSE = "1"  # the density of the dense run IMP starts from: random at density 1
RUN_FILES = {"metrics": "metrics.json", "model": "model.pt", "mask": "mask.pt", "structure": "structure.json"}
TRAINING = ("train", "train_dense", "train_reinit", "train_prune")  # the kinds of job that train a network
KINDS = ("dataset", "mlflow_init", "mask", "imp_mask", "mask_layer_matched", *TRAINING, "sensitivity", "table",
         "paper_table", "figure", "claims", "mlflow_summary", "report")  # every kind of job, by the rule that runs it


def format_density(density: float | str) -> str:
    """The one spelling of a density in paths, wildcards and tags: 4 significant digits."""
    return f"{float(density):.4g}"


# ------------------------------------------------------------------------------------------------ files
TEMPLATES = {  # {run} is a Run's name: {dataset}/{model}/{method}/d{density}[/{variant}]/s{seed}
    "data": "{data}/{dataset}.npz",
    "data_log": "{logs}/data/{dataset}.log",
    "tracking": "{results}/.tracking-ready.json",
    "tracking_log": "{logs}/mlflow_init.log",
    "summary": "{results}/.mlflow-summary.json",
    "summary_log": "{logs}/mlflow_summary.log",
    "mask": "{results}/{study}/masks/{run}.pt",
    "mask_log": "{logs}/{study}/masks/{run}.log",
    "run": "{results}/{study}/runs/{run}",
    "run_log": "{logs}/{study}/runs/{run}.log",
    "curve": "{results}/{study}/sensitivity/{run}/curve.json",
    "curve_log": "{logs}/{study}/sensitivity/{run}.log",
    "table": "{results}/{study}/tables/{kind}.csv",
    "table_log": "{logs}/{study}/tables/{kind}.log",
    "paper_table": "{results}/{study}/tables/{name}.{ext}",  # a table for a paper: .csv and .tex
    "paper_table_log": "{logs}/{study}/tables/{name}.log",
    "figure": "{results}/{study}/figures/{fig}.{ext}",
    "figure_log": "{logs}/{study}/figures/{fig}.log",
    "claims": "{results}/claims.{ext}",
    "claims_log": "{logs}/claims.log",
    "report": "{results}/report.html",
    "report_log": "{logs}/report.log",
}


class _Keep(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


@dataclass(frozen=True)
class Paths:
    """Where every file lives. A field left out stays a `{wildcard}`: the rules' patterns come from here too."""

    results: str
    data: str

    def __call__(self, template: str, **fields: Any) -> str:
        values = _Keep(results=self.results, data=self.data, logs=f"{self.results}/logs", **fields)
        return TEMPLATES[template].format_map(values)


@dataclass(frozen=True)
class Run:
    """What defines a training run (or the mask, or the curve, of one): the one spelling of its identity. Its `name`
    is its folder under results/{study}/runs/ (and its mask's and curve's path there) and its MLflow run name's
    source, `tags()` what its metrics.json and MLflow run record, `parent` its MLflow parent run's key;
    `parse`, `from_tags` and `from_path` read it back."""

    dataset: str
    model: str
    method: str
    density: str  # format_density's spelling (a number given is spelled so)
    seed: int | str
    variant: str = ORIGINAL  # "reinit": the final structure trained again from fresh weights; "prune": mag's pruning
    study: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.density, str):
            object.__setattr__(self, "density", format_density(self.density))
        if self.variant == "":  # the CLI's empty --variant: the run itself
            object.__setattr__(self, "variant", ORIGINAL)
        if self.variant not in VARIANTS:
            raise ValueError(f"run variant {self.variant!r} is not one of {', '.join(VARIANTS)}")

    @property
    def name(self) -> str:
        """{dataset}/{model}/{method}/d{density}[/{variant}]/s{seed}: the original run has no variant folder."""
        base = f"{self.dataset}/{self.model}/{self.method}/d{self.density}"
        return f"{base}/s{self.seed}" if self.variant == ORIGINAL else f"{base}/{self.variant}/s{self.seed}"

    @property
    def parent(self) -> str:
        """The key of its MLflow parent run: its method on its dataset and model, in its study."""
        return f"{self.study}/{self.dataset}/{self.model}/{self.method}"

    def tags(self) -> dict[str, Any]:
        """What defines it, as its metrics.json `spec` and its MLflow run's tags record it."""
        return {"study": self.study, "dataset": self.dataset, "model": self.model, "method": self.method,
                "density": self.density, "seed": self.seed, "variant": self.variant}

    def but(self, **changes: Any) -> "Run":
        return dataclasses.replace(self, **changes)

    @classmethod
    def pattern(cls, **fixed: str) -> str:
        """The run name with {wildcards} for what `fixed` leaves out (a rule's pattern)."""
        names = ("dataset", "model", "method", "density", "seed")
        return cls(**{**{n: "{" + n + "}" for n in names}, **fixed}).name

    @classmethod
    def parse(cls, name: str, study: str = "") -> "Run":
        """The run a name spells (its `name` read back)."""
        match = re.fullmatch(_RUN, name)
        if match is None:
            raise ValueError(f"{name!r} is not a run name: {{dataset}}/{{model}}/{{method}}/d{{density}}"
                             f"[/{{variant}}]/s{{seed}}")
        return cls._of(match.groupdict(), study)

    @classmethod
    def from_tags(cls, tags: Mapping[str, Any]) -> "Run":
        """The run whose `tags()` (a metrics.json or curve.json `spec`) these are."""
        fields = ("dataset", "model", "method", "density", "seed", "variant", "study")
        return cls(**{k: tags[k] for k in fields if k in tags})

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> "Run | None":
        """The run a results file belongs to (its mask, a file of its folder, its curve, their logs), its study
        included; None for any other path."""
        found = locate(path)
        return found[1].get("run") if found else None

    @classmethod
    def _of(cls, fields: Mapping[str, str | None], study: str) -> "Run":
        seed = fields["seed"]
        return cls(fields["dataset"], fields["model"], fields["method"], fields["density"],
                   int(seed) if seed.isdigit() else seed, fields["variant"] or ORIGINAL, study)


# A run's name as a regular expression (`Run.name` read back): the variant folder only for a variant of a run.
_RUN = (r"(?P<dataset>[^/]+)/(?P<model>[^/]+)/(?P<method>[^/]+)/d(?P<density>[^/]+)"
        rf"(?:/(?P<variant>{'|'.join(VARIANTS[1:])}))?/s(?P<seed>\d+)")


def _template_regex(template: str) -> re.Pattern:
    """A path template as a regular expression: {run} a run's name, a root folder anything, a field one folder."""
    def field(m: re.Match) -> str:
        name = m[1]
        if name == "run":
            return f"(?P<run>{_RUN.replace('(?P<', '(?P<run_')})"
        return f"(?P<{name}>.+?)" if name in ("results", "data", "logs") else f"(?P<{name}>[^/]+?)"
    return re.compile(re.sub(r"\\\{(\w+)\\\}", field, re.escape(template)) + r"(?:/(?P<file>.+))?")


_REGEXES = {name: _template_regex(template) for name, template in TEMPLATES.items()}


def locate(path: str | os.PathLike) -> tuple[str, dict[str, Any]] | None:
    """Which path template a file is under (the first that fits) and its fields, `run` a Run; None for none.
    A file inside a run's folder (`run` template) has its name in `file`."""
    text = os.fspath(path)
    for template, regex in _REGEXES.items():
        match = regex.fullmatch(text)
        if match is None or (match["file"] and template != "run"):
            continue
        fields = {k: v for k, v in match.groupdict().items() if v is not None and not k.startswith("run_")}
        if "run" in fields:
            run = {k.removeprefix("run_"): v for k, v in match.groupdict().items() if k.startswith("run_")}
            fields["run"] = Run._of(run, fields.get("study", ""))
        return template, fields
    return None


def training_kind(run: Run) -> str:
    """The kind of job (the rule) that trains `run`: the dense run IMP and mag start from (random at density 1)
    also keeps its rewind weights; a variant has its own rule."""
    if run.variant != ORIGINAL:
        return f"train_{run.variant}"
    return "train_dense" if run.method == "random" and run.density == DENSE else "train"


def producer(path: str | os.PathLike) -> str | None:
    """The kind of job (= Snakemake rule) that writes a results file, from its place in the layout; None for a
    path outside it (or one no job of a study writes)."""
    found = locate(path)
    template, fields = found or ("", {})
    if template == "mask":
        kind = plan(fields["run"].method, {}).kind
        return {"imp": "imp_mask", "layer-matched": "mask_layer_matched"}.get(kind, "mask")
    if template == "run":
        return "train_dense" if fields.get("file") == "rewind.pt" else training_kind(fields["run"])
    if template == "table":
        return "paper_table" if fields["kind"] in PAPER_TABLES else "table"
    return {"paper_table": "paper_table", "curve": "sensitivity", "figure": "figure"}.get(template)


@dataclass(frozen=True)
class Job:
    """One job of the grid: what its rule runs it with. `kind` is the rule's name."""

    kind: str
    key: str  # what defines it: "phew/cifar10/resnet20/snip/d0.1074/s0", "phew/runs", "cifar10", ...
    inputs: Mapping[str, str | tuple[str, ...]]
    outputs: Mapping[str, str]
    log: str
    params: Mapping[str, Any] = field(default_factory=dict)  # exactly the rule's (a changed value reruns the job)
    study: str = ""  # "" for the preset's shared jobs: dataset, mlflow_init, claims
    run: Run | None = None  # the run a mask, training or sensitivity job is of

    @property
    def name(self) -> str:
        return f"{self.kind} {self.key}" if self.key else self.kind

    @property
    def output(self) -> str:
        return next(iter(self.outputs.values()))

    @property
    def dir(self) -> str:
        """The folder it writes: a run's folder for a training job."""
        return posixpath.dirname(self.output)

    def command(self, **given: Any) -> Any:
        """The command contract it runs (sparsenets.commands; `given`: what the workflow knows and the job does
        not, e.g. its Snakemake threads). Imported here: commands knows study only for its types."""
        from .commands import for_job

        return for_job(self, **given)

    def files(self) -> list[str]:
        """Every input file, in order."""
        return [f for v in self.inputs.values() for f in ([v] if isinstance(v, str) else v)]


# ----------------------------------------------------------------------------------------------- studies
class Plan(NamedTuple):
    """How a method trains: its kind, the mask it starts from, its topology and the topology's options."""

    kind: str  # pruning | topology | frozen-dnw | imp | layer-matched
    mask: str
    topology: str
    options: Mapping[str, Any]


@dataclass(frozen=True)
class Study:
    """One study of a preset: its name, protocol and grid (its config block)."""

    name: str
    spec: Mapping[str, Any]
    recipe: Mapping[str, Any]
    key: str  # its config key, for messages: presets.quick.studies.phew

    @property
    def preset(self) -> str:
        """The preset it belongs to (its key is presets.{preset}.studies.{name}): named in its figures' captions."""
        return self.key.split(".")[1]

    @property
    def protocol(self) -> "Protocol":
        return PROTOCOLS[self.spec["protocol"]]

    def need(self, key: str) -> Any:
        if key not in self.spec:
            raise ValueError(f"config key '{self.key}.{key}' is missing: a {self.spec['protocol']} study needs it")
        return self.spec[key]

    @property
    def imp(self) -> Mapping[str, Any]:
        return self.need("imp")

    def densities(self) -> list[float]:
        """The listed densities, or IMP's levels: density (1 - rate)^L."""
        if "imp" in self.spec:
            return [(1 - self.imp["rate"]) ** level for level in self.imp["levels"]]
        return list(self.need("densities"))

    def imp_density(self, level: int) -> str:
        return format_density((1 - self.imp["rate"]) ** level)

    def level_of(self, density: str) -> int:
        """The IMP level a density stands for (it must be one of (1 - rate)^L exactly)."""
        rate = self.imp["rate"]
        level = round(math.log(float(density)) / math.log(1 - rate))
        if level < 1 or self.imp_density(level) != density:
            raise ValueError(f"config key '{self.key}': density {density} is not an IMP level of rate {rate}")
        return level

    def focus_density(self) -> float:
        """The density the sensitivity, in-degree and freezing runs are at: IMP's focus_level."""
        return (1 - self.imp["rate"]) ** self.need("focus_level")

    def method_options(self, method: str) -> dict:
        return dict(self.spec.get("method_options", {}).get(method, {}))

    def runs(self, methods: Sequence[str] | None = None, densities: Sequence[float] | None = None) -> list[Run]:
        """Every (dataset, model, method, density, seed) of the study, or of some of its methods and densities."""
        s = self.spec
        return [Run(d, m, meth, format_density(dens), seed, study=self.name) for d, m, meth, dens, seed in product(
            s["datasets"], s["models"], methods or s["methods"], densities or self.densities(), s["seeds"])]

    def sparser(self, density: str) -> str | None:
        """The next listed density below `density` (a nested method's chain grows from it), or None."""
        below = [d for d in map(format_density, self.densities()) if float(d) < float(density)]
        return max(below, key=float) if below else None

    def mag_recipe(self) -> dict:
        """mag's gradual pruning phase: the recipe's optimizer at its initial lr (no steps) for mag.prune_epochs
        epochs (PHEW's code: 10), the mask tightened at the start of each."""
        epochs = int(self.spec.get("mag", {}).get("prune_epochs", 10))
        return {**self.recipe, "epochs": epochs, "milestones": []}

    def freeze_runs(self) -> list[Run]:
        """DNW frozen after each of freeze_epochs, at the focus density."""
        methods = [f"dnw-freeze{k}" for k in self.spec.get("freeze_epochs", [])]
        return self.runs(methods, [self.focus_density()]) if methods else []


def plan(method: str, options: Mapping[str, Any], topologies: Sequence[str] = TOPOLOGIES,
         dynamic_init: str = "random") -> Plan:
    """What kind a method is (its catalogue entry's; a name the catalogue lacks is a pruning method), the mask it
    starts from, and its topology with the topology's options."""
    entry = catalogue.method(method)
    kind = "topology" if method in topologies else entry.kind if entry else "pruning"
    if kind == "frozen-dnw":
        return Plan(kind, dynamic_init, "dnw", {"freeze_epoch": int(FROZEN.fullmatch(method)[1])})
    if kind == "topology":
        return Plan(kind, dynamic_init, method, dict(options))
    if kind in ("imp", "mag", "layer-matched"):
        return Plan(kind, method, "static", {})
    return Plan("pruning", method, "static", {})


def gpu_share(config: Mapping[str, Any], model: str) -> tuple[int, int]:
    """(slots a job of `model` takes, slots per GPU). A GPU runs `runs_per_gpu` jobs of a model at once (a number,
    or per model with a `default`); with several values it has their least common multiple of slots (1, 2, 4 -> 4)
    and a job takes slots / its value, so `--resources gpu_slots=N*slots` packs N GPUs (README)."""
    value = config.get("runs_per_gpu", 1)
    runs = dict(value) if isinstance(value, Mapping) else {"default": value}
    slots = math.lcm(1, *runs.values())
    return slots // runs.get(model, runs.get("default", 1)), slots


def preset_of(config: Mapping[str, Any], preset: str | None = None) -> tuple[str, Mapping[str, Any]]:
    name = preset or config["preset"]
    if name not in config["presets"]:
        raise ValueError(f"config key 'preset': {name!r} is not a preset; choose one of "
                         f"{', '.join(sorted(config['presets']))}")
    return name, config["presets"][name]


def studies(config: Mapping[str, Any], preset: str | None = None) -> list[Study]:
    """The preset's studies, in config order; an unknown preset, protocol or recipe fails naming its key."""
    name, spec = preset_of(config, preset)
    only = only_studies(config, name, list(spec["studies"]))
    out = []
    for study, s in spec["studies"].items():
        if only and study not in only:
            continue
        key = f"presets.{name}.studies.{study}"
        if s.get("protocol") not in PROTOCOLS:
            raise ValueError(f"config key '{key}.protocol': {s.get('protocol')!r} is not a protocol; choose one of "
                             f"{', '.join(PROTOCOLS)}")
        if s["recipe"] not in config["recipes"]:
            raise ValueError(f"config key '{key}.recipe': {s['recipe']!r} is not a recipe; choose one of "
                             f"{', '.join(sorted(config['recipes']))}")
        out.append(Study(study, s, config["recipes"][s["recipe"]], key))
        check_claim_options(out[-1])
    return out


def check_claim_options(study: "Study") -> None:
    """Claim options that would make a claim vacuous fail here, before any job runs, naming the key: C7's k must be
    below the recipe's epochs (DNW frozen after all its epochs is full DNW) and among the freezing runs it compares;
    C3's low densities must include one of the study's densities."""
    spec, key = study.spec, study.key
    if spec.get("protocol") == "deconstructing":
        k, epochs = int(spec.get("freeze_claim_epoch", 1)), int(study.recipe["epochs"])
        if k >= epochs:
            raise ValueError(f"config key '{key}.freeze_claim_epoch': k = {k} is not below the {epochs} epochs of recipe "
                             f"{spec['recipe']!r}: DNW frozen after all its epochs is full DNW, so claim C7 would "
                             f"compare DNW with itself")
        freeze = spec.get("freeze_epochs")
        if freeze and "dnw" in spec.get("methods", []) and not {0, k} <= set(freeze):
            raise ValueError(f"config key '{key}.freeze_epochs': {list(freeze)} lacks "
                             f"{' and '.join(str(j) for j in sorted({0, k} - set(freeze)))}; claim C7 compares DNW "
                             f"frozen after k = freeze_claim_epoch = {k} epochs with k = 0")


def only_studies(config: Mapping[str, Any], preset: str, available: Sequence[str]) -> list[str]:
    """The studies config key `only_studies` keeps (a list, or "a,b" as `--config only_studies=a,b` gives it);
    none: every study of the preset. Lets a user run one study of a preset without copying it (README)."""
    value = config.get("only_studies") or []
    names = [n.strip() for n in value.split(",") if n.strip()] if isinstance(value, str) else [str(n) for n in value]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"config key 'only_studies': preset {preset!r} has no study {', '.join(map(repr, unknown))}; "
                         f"its studies: {', '.join(available)}")
    return names


def check_names(config: Mapping[str, Any], known: Mapping[str, Sequence[str]] | None = None,
                preset: str | None = None) -> None:
    """Unknown models, methods and datasets fail here, naming the key (`known`: the registries' names as
    `catalogue.names()` gives them, by default)."""
    known = catalogue.names() if known is None else known
    composed = catalogue.of_kind("imp", "mag")  # methods the grid composes from the registries' parts
    for study in studies(config, preset):
        spec = study.spec
        for key in ("models", "methods", "datasets"):
            names = list(known[key]) + ([*composed, *known["topologies"]] if key == "methods" else [])
            for name in spec.get(key, []):
                if key == "methods" and name.startswith(LIKE):
                    source = name.removeprefix(LIKE)
                    if source not in spec["methods"] or source.startswith(LIKE):
                        raise ValueError(f"config key '{study.key}.methods': {name!r} copies the layer densities "
                                         f"of method {source!r}, which this study does not list")
                elif name not in names:
                    raise ValueError(f"config key '{study.key}.{key}': unknown {key[:-1]} {name!r}; known: "
                                     f"{', '.join(names)}")


# ------------------------------------------------------------------------------------------------- the grid
class Grid:
    """Builds jobs on demand, each once (by its first output): asking for a run adds its mask, the run an IMP
    level prunes, the run a layer-matched mask copies, ..."""

    def __init__(self, config: Mapping[str, Any], topologies: Sequence[str] = TOPOLOGIES) -> None:
        self.paths = Paths(config["results_dir"], config["data_dir"])
        self.device = config.get("device", "auto")
        self.config = config  # runs_per_gpu: device_for
        self._devices: dict[str, str] = {}  # model -> its jobs' device (thousands of jobs, a handful of models)
        self.dynamic_init = config.get("dynamic_init", "random")
        self.topologies = tuple(topologies)
        self.jobs: dict[str, Job] = {}

    def _add(self, job: Job) -> Job:
        return self.jobs.setdefault(job.output, job)

    def device_for(self, model: str) -> str:
        """The device a job of `model` claims: with several runs per GPU, its share ("auto@1/4", sparsenets.devices)."""
        if model not in self._devices:
            need, slots = gpu_share(self.config, model)
            shared = slots > 1 and self.device in ("auto", "cuda")
            self._devices[model] = f"{self.device}@{need}/{slots}" if shared else self.device
        return self._devices[model]

    def plan(self, study: Study, method: str) -> Plan:
        """The study's own `dynamic_init` (a variant study's choice), else the config's."""
        init = study.spec.get("dynamic_init", self.dynamic_init)
        return plan(method, study.method_options(method), self.topologies, init)

    def dataset(self, name: str) -> Job:
        return self._add(Job("dataset", name, {}, {"npz": self.paths("data", dataset=name)},
                             self.paths("data_log", dataset=name)))

    def tracking(self, names: Sequence[str]) -> Job:
        return self._add(Job("mlflow_init", "", {}, {"marker": self.paths("tracking")}, self.paths("tracking_log"),
                             {"experiments": " ".join(names)}))

    def parent_runs(self) -> Job:
        """mlflow_init also creates the parent run of every training run (its method on its dataset and model)
        before the jobs fan out, so that jobs starting at once never race to create one."""
        keys = dict.fromkeys(j.run.parent for j in self.jobs.values() if j.kind in TRAINING and j.run is not None)
        job = self.jobs[self.paths("tracking")]
        self.jobs[job.output] = dataclasses.replace(job, params={**job.params, "parents": " ".join(keys)})
        return self.jobs[job.output]

    def mlflow_summary(self, studies: Sequence[Study]) -> Job:
        """One job for the preset, after the claims: each study's figures and claims.md on its MLflow summary run."""
        figures = {s.name: [f for j in self.jobs.values() if j.kind == "figure" and j.study == s.name
                            for f in j.outputs.values()] for s in studies}
        return self._add(Job("mlflow_summary", "", {"figures": tuple(f for fs in figures.values() for f in fs),
                                                    "claims": self.paths("claims", ext="md")},
                             {"marker": self.paths("summary")}, self.paths("summary_log"), {"studies": figures}))

    # masks
    def mask(self, study: Study, run: Run) -> Job:
        """The mask a run of `run.method`'s plan starts from (run.method is the mask's method)."""
        if run.method == "imp":
            return self.imp_mask(study, run)
        if run.method.startswith(LIKE):
            return self.layer_matched_mask(study, run)
        options = study.method_options(run.method)
        if study.spec.get("layer_policy", "global") == "first-layer-dense" and run.method in FIRST_LAYER_DENSE:
            options["first_layer_dense"] = True
        data = self.dataset(run.dataset).output
        sparser = study.sparser(run.density) if run.method in NESTED else None
        previous = self.mask(study, run.but(density=sparser)).output if sparser else ()
        return self._add(Job("mask", f"{study.name}/{run.name}", {"data": data, "previous": previous},
                             {"mask": self._mask(study, run)},
                             self.paths("mask_log", study=study.name, run=run.name),
                             {"options": json.dumps(options), "device": self.device_for(run.model)}, study.name, run))

    def imp_mask(self, study: Study, run: Run) -> Job:
        """Level L prunes the trained run of level L-1; level 1 prunes the dense run (random at density 1)."""
        level = study.level_of(run.density)
        previous = run.but(method="random", density=DENSE) if level == 1 else run.but(
            density=study.imp_density(level - 1))
        source = self.train(study, previous)
        return self._add(Job("imp_mask", f"{study.name}/{run.name}",
                             {"model": source.outputs["model"], "mask": source.outputs["mask"]},
                             {"mask": self._mask(study, run)}, self.paths("mask_log", study=study.name, run=run.name),
                             {"rate": study.imp["rate"], "run_dir": source.dir}, study.name, run))

    def layer_matched_mask(self, study: Study, run: Run) -> Job:
        """The per-layer kept counts of another method's final structure (same density and seed), rewired at random."""
        like = self.train(study, run.but(method=run.method.removeprefix(LIKE))).outputs["mask"]
        return self._add(Job("mask_layer_matched", f"{study.name}/{run.name}",
                             {"data": self.dataset(run.dataset).output, "like": like},
                             {"mask": self._mask(study, run)}, self.paths("mask_log", study=study.name, run=run.name),
                             {"options": json.dumps({"like": like})}, study.name, run))

    def _mask(self, study: Study, run: Run) -> str:
        return self.paths("mask", study=study.name, run=run.name)

    # training
    def train(self, study: Study, run: Run) -> Job:
        """A run under the mask its method's plan starts from; random at density 1 is the dense run IMP starts
        from, which also keeps its weights at imp.rewind_step; IMP's levels restart from those."""
        plan_ = self.plan(study, run.method)
        if plan_.kind == "mag":
            pruned = self.mag_prune(study, run)
            return self._run_job("train", study, run, pruned.outputs["mask"], pruned.outputs["model"], "static", {}, None)
        mask = self.mask(study, run.but(method=plan_.mask)).output
        dense = training_kind(run) == "train_dense"
        init: tuple[str, ...] | str = ()
        if run.method == "imp":
            init = self.train(study, run.but(method="random", density=DENSE)).outputs["rewind"]
        rewind = int(study.spec.get("imp", {}).get("rewind_step", 0)) if dense else None
        return self._run_job(training_kind(run), study, run, mask, init, plan_.topology,
                             plan_.options, rewind)

    def reinit(self, study: Study, run: Run) -> Job:
        """The final structure of a run, trained again (static) from fresh weights drawn from new seeds."""
        mask = self.train(study, run).outputs["mask"]
        return self._run_job("train_reinit", study, run.but(variant="reinit"), mask, (), "static", {}, None)

    def mag_prune(self, study: Study, run: Run) -> Job:
        """mag's pruning phase: the dense run's final weights, pruned by global magnitude to the run's density over
        mag.prune_epochs epochs of training (cubic schedule); the mag run retrains its result."""
        dense = self.train(study, run.but(method="random", density=DENSE))
        return self._run_job("train_prune", study, run.but(variant="prune"), dense.outputs["mask"],
                             dense.outputs["model"], GRADUAL, {"density": float(run.density)}, None, study.mag_recipe())

    def _run_job(self, kind: str, study: Study, run: Run, mask: str, init: tuple[str, ...] | str, topology: str,
                 options: Mapping[str, Any], rewind: int | None, recipe: Mapping[str, Any] | None = None) -> Job:
        folder = self.paths("run", study=study.name, run=run.name)
        outputs = {name: f"{folder}/{file}" for name, file in RUN_FILES.items()}
        if kind == "train_dense":
            outputs["rewind"] = f"{folder}/rewind.pt"
        inputs = {"data": self.dataset(run.dataset).output, "mask": mask, "init": init,
                  "tracking": self.paths("tracking")}
        params = {"recipe": json.dumps(study.recipe if recipe is None else recipe), "topology": topology, "options": json.dumps(options),
                  "device": self.device_for(run.model), "out_dir": folder, "rewind_step": rewind}
        return self._add(Job(kind, f"{study.name}/{run.name}", inputs, outputs,
                             self.paths("run_log", study=study.name, run=run.name), params, study.name, run))

    # analyses
    def curve(self, study: Study, run: Run) -> Job:
        """Further pruning of a trained run, by magnitude and at random, evaluated without retraining."""
        source = self.train(study, run)
        return self._add(Job(
            "sensitivity", f"{study.name}/{run.name}",
            {"data": self.dataset(run.dataset).output, "model": source.outputs["model"],
             "mask": source.outputs["mask"]},
            {"curve": self.paths("curve", study=study.name, run=run.name)},
            self.paths("curve_log", study=study.name, run=run.name),
            {"fractions": " ".join(map(str, study.need("sensitivity_fractions"))), "run_dir": source.dir,
             "device": self.device_for(run.model), "precision": study.recipe.get("precision", "auto"),
             "test_images": int(study.spec.get("sensitivity_test_images", 0))}, study.name, run))

    def table(self, study: Study, kind: str, files: Sequence[str]) -> Job:
        return self._add(Job("table", f"{study.name}/{kind}", {"files": tuple(files)},
                             {"csv": self.paths("table", study=study.name, kind=kind)},
                             self.paths("table_log", study=study.name, kind=kind), {}, study.name))

    def paper_table(self, study: Study, name: str, table: str) -> Job:
        """A method × density table for a paper (sparsenets.paper_tables), from the study's tidy table `table`."""
        return self._add(Job("paper_table", f"{study.name}/{name}",
                             {"table": self.paths("table", study=study.name, kind=table)},
                             {ext: self.paths("paper_table", study=study.name, name=name, ext=ext)
                              for ext in ("csv", "tex")},
                             self.paths("paper_table_log", study=study.name, name=name), {"preset": study.preset},
                             study.name))

    def figure(self, study: Study, fig: str, figure: "Figure") -> Job:
        tables = tuple(self.paths("table", study=study.name, kind=t) for t in figure.tables)
        return self._add(Job("figure", f"{study.name}/{fig}", {"tables": tables},
                             {ext: self.paths("figure", study=study.name, fig=fig, ext=ext) for ext in ("png", "pdf")},
                             self.paths("figure_log", study=study.name, fig=fig),
                             {"options": json.dumps({**figure.options(study), "preset": study.preset})}, study.name))

    def claims(self, studies: Sequence[Study]) -> Job:
        """One job for the preset: each study's claims (its protocol's), judged on its own tables."""
        tables = {s.name: {t: self.paths("table", study=s.name, kind=t) for t in s.protocol.claim_tables}
                  for s in studies}
        judged = {s.name: {"protocol": s.protocol.name, "tables": tables[s.name], "options": s.protocol.claim_options(s)}
                  for s in studies if tables[s.name]}
        data = tuple(dict.fromkeys(self.dataset(d).output for s in studies for d in s.spec["datasets"]))
        return self._add(Job("claims", "", {"tables": tuple(p for t in tables.values() for p in t.values()),
                                            "data": data},  # named with their sha256 in claims.md
                             {"md": self.paths("claims", ext="md"), "csv": self.paths("claims", ext="csv")},
                             self.paths("claims_log"),
                             {"studies": judged, "preset": studies[0].preset if studies else ""}))

    def report(self, studies: Sequence[Study]) -> Job:
        """One self-contained page for the preset (sparsenets.report): the grid, the claims, every figure with
        its caption. Its context holds what the page and the caption template read."""
        figures = [j for j in self.jobs.values() if j.kind == "figure"]
        tables = [j for j in self.jobs.values() if j.kind == "paper_table"]
        claims = self.jobs[self.paths("claims", ext="md")].outputs
        data = {d: self.dataset(d).output for s in studies for d in s.spec["datasets"]}
        preset = studies[0].preset if studies else ""
        config = {"preset": preset, "presets": {preset: {"studies": {s.name: dict(s.spec) for s in studies}}},
                  "recipes": {s.spec["recipe"]: dict(s.recipe) for s in studies}}
        context = {"preset": preset, "config": config, "claims": dict(claims), "data": data,
                   "figures": [{"study": j.study, "fig": j.key.split("/", 1)[1], "png": j.outputs["png"],
                                "tables": list(j.inputs["tables"])} for j in figures],
                   "paper_tables": [{"study": j.study, "name": j.key.split("/", 1)[1], **j.outputs} for j in tables],
                   "summary": self.paths("summary")}  # the MLflow experiments, for links to each claim's runs
        return self._add(Job("report", "", {"figures": tuple(j.outputs["png"] for j in figures),
                                            "claims": tuple(claims.values()), "data": tuple(data.values()),
                                            "tables": tuple(f for j in tables for f in j.outputs.values()),
                                            "summary": self.paths("summary")},
                             {"html": self.paths("report")}, self.paths("report_log"), {"context": json.dumps(context)}))


def expand(config: Mapping[str, Any], preset: str | None = None, topologies: Sequence[str] = TOPOLOGIES) -> list[Job]:
    """Every job of a preset (the config's own by default): what `snakemake` runs from scratch, rule by rule.
    `topologies`: the topologies a study may list (the catalogue's, by default)."""
    grid = Grid(config, topologies)
    chosen = studies(config, preset)
    grid.tracking([s.name for s in chosen])
    for s in chosen:
        protocol = s.protocol
        for kind, files in protocol.tables.items():
            grid.table(s, kind, files(grid, s))
        for name, table in protocol.paper_tables.items():
            grid.paper_table(s, name, table)
        for fig, figure in protocol.figures.items():
            grid.figure(s, fig, figure)
    grid.claims(chosen)
    grid.mlflow_summary(chosen)
    grid.parent_runs()
    grid.report(chosen)
    return list(grid.jobs.values())


def targets(jobs: Sequence[Job]) -> list[str]:
    """What `snakemake` builds by default: every study's tables and figures, and the claims."""
    return [f for j in jobs if j.kind in ("table", "paper_table", "figure", "claims", "mlflow_summary", "report")
            for f in j.outputs.values()]


def by_output(jobs: Sequence[Job]) -> dict[str, Job]:
    """Every output file -> the job that writes it."""
    return {f: j for j in jobs for f in j.outputs.values()}


# --------------------------------------------------------------------------------------------- protocols
@dataclass(frozen=True)
class Figure:
    tables: tuple[str, ...]  # the study's tables it reads
    options: Callable[[Study], dict] = lambda study: {}  # e.g. the density a one-density figure is drawn at


@dataclass(frozen=True)
class Protocol:
    """What a study of this kind yields: tables (each from the run files `tables[kind](grid, study)` asks the grid
    for: that is what puts the runs into the grid), figures, and the claims judged on it (claim id -> the table
    it reads; sparsenets.claims), tested at `claim_options(study)`, and its tables for a paper (name -> the tidy
    table each summarises; sparsenets.paper_tables)."""

    name: str
    tables: Mapping[str, Callable[[Grid, Study], list[str]]]
    figures: Mapping[str, Figure]
    claims: Mapping[str, str]
    claim_options: Callable[[Study], dict]
    paper_tables: Mapping[str, str] = field(default_factory=dict)  # name -> the tidy table it summarises


    @property
    def claim_tables(self) -> list[str]:
        return [t for t in self.tables if t in self.claims.values()]


def _metrics(grid: Grid, study: Study) -> list[str]:
    return [grid.train(study, r).outputs["metrics"] for r in study.runs()]


def _structures(grid: Grid, study: Study) -> list[str]:
    return [grid.train(study, r).outputs["structure"] for r in study.runs()]


def _runs_reinit_frozen(grid: Grid, study: Study) -> list[str]:
    """Every run, the same structures retrained from fresh weights, and DNW frozen after each k."""
    return (_metrics(grid, study) + [grid.reinit(study, r).outputs["metrics"] for r in study.runs()]
            + [grid.train(study, r).outputs["metrics"] for r in study.freeze_runs()])


def _curves(grid: Grid, study: Study) -> list[str]:
    """At the focus density, which the figure and claims C5 and C5b read."""
    return [grid.curve(study, r).output for r in study.runs(densities=[study.focus_density()])]


def _dnw_structures(grid: Grid, study: Study) -> list[str]:
    return [grid.train(study, r).outputs["structure"] for r in study.runs(["dnw"], [study.focus_density()])]


def _dynamic_structures(grid: Grid, study: Study) -> list[str]:
    """The runs of the methods whose structure moves during training (every method if none does)."""
    dynamic = [m for m in study.spec["methods"] if grid.plan(study, m).topology != "static"]
    return [grid.train(study, r).outputs["structure"] for r in study.runs(dynamic or None)]


PHEW = Protocol(
    "phew",
    tables={"runs": _metrics, "epochs": _metrics, "layers": _structures},
    figures={
        "accuracy_vs_density": Figure(("runs",)),
        "layer_widths": Figure(("layers",), lambda s: {"density": s.spec.get("width_density")}),
        "path_kernel": Figure(("runs",)),
        "train_loss": Figure(("epochs",), lambda s: {"density": s.spec.get("width_density")}),
    },
    claims={"C1": "layers", "C2": "runs", "C3": "runs"},
    claim_options=lambda s: {"claim_density_max": s.spec.get("claim_density_max", 0.11),
                             **{k: s.spec[k] for k in ("structural_floor", "min_trace_gap_decades",
                                                       "trace_floor_decades") if k in s.spec}},
    paper_tables={"accuracy": "runs"},
)

DECONSTRUCTING = Protocol(
    "deconstructing",
    tables={"runs": _runs_reinit_frozen, "sensitivity": _curves, "indegree": _dnw_structures,
            "overlap": _dynamic_structures},
    figures={
        "reinit": Figure(("runs",)),
        "sensitivity": Figure(("sensitivity",), lambda s: {"density": s.focus_density()}),
        "indegree": Figure(("indegree", "overlap"), lambda s: {"density": s.focus_density()}),
        "freezing": Figure(("runs",)),
    },
    claims={"C4": "runs", "C5": "sensitivity", "C5b": "sensitivity", "C6": "overlap", "C7": "runs"},
    claim_options=lambda s: {"focus_density": s.focus_density(),
                             "sensitivity_ranking": s.spec.get("sensitivity_ranking", "global"),
                             "sensitivity_bn": s.spec.get("sensitivity_bn", "stale"),
                             "freeze_claim_epoch": s.spec.get("freeze_claim_epoch", 1),
                             "equivalence_margin": s.spec.get("equivalence_margin", 0.01),
                             **({"structural_floor": s.spec["structural_floor"]} if "structural_floor" in s.spec else {})},
    paper_tables={"accuracy": "runs"},
)

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (PHEW, DECONSTRUCTING)}
TABLES = tuple(dict.fromkeys(t for p in PROTOCOLS.values() for t in p.tables))  # every table kind
PAPER_TABLES = tuple(dict.fromkeys(t for p in PROTOCOLS.values() for t in p.paper_tables))  # every paper table
