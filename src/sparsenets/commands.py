"""The contract of every `python -m sparsenets` command: one frozen dataclass per command, spelled once.

A contract's fields (type, default, help) generate the command's argparse subparser (`parser`), the argument
string a Snakemake job runs it with (`to_argv`; every rule's shell is `{PY} -m sparsenets {params.argv} > {log}
2>&1`, its argv from `for_job`), and docs/CLI.md (`reference`). A field's type decides its spelling: a str,
int or float is one value, a bool a flag, a tuple several values, a dict one JSON object; `positional=True`
puts it before the options. No torch, no Snakemake: the workflow builds every job's argv at parse time.

After changing a contract, regenerate the reference: `.venv/bin/python -m sparsenets.commands > docs/CLI.md`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

if TYPE_CHECKING:
    from .study import Job

REQUIRED: Any = dataclasses.MISSING
DEBUG_HELP = "show the traceback of an expected error too (also: SPARSENETS_DEBUG=1)"
DEVICE_HELP = "auto (a free GPU, else the CPU), cpu, cuda, cuda:N"
NAMES_HELP = "(python -m sparsenets names)"


def arg(help: str, default: Any = REQUIRED, **how: Any) -> Any:
    """A contract field: its help, its default (none: required) and, in `how`, argparse's metavar or choices,
    or positional=True."""
    meta = {"help": help, **how}
    if isinstance(default, dict):  # a JSON object: each instance gets its own
        return field(default_factory=dict, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Option:
    """One field of a contract as the command line spells it."""

    name: str
    kind: str  # value | many | json | flag
    type: Any  # the value's type (a tuple's item type)
    default: Any
    help: str
    metavar: str | None = None
    choices: tuple | None = None
    positional: bool = False

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def words(self, value: Any) -> list[str]:
        """The value as command-line words."""
        if self.kind == "many":
            return [str(v) for v in value]
        return [json.dumps(value)] if self.kind == "json" else [str(value)]


def _option(f: dataclasses.Field, hint: Any) -> Option:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):  # X | None: optional
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        kind, item = "flag", bool
    elif origin is tuple:
        kind, item = "many", args[0]
    elif hint is dict or origin is dict:
        kind, item = "json", dict
    else:
        kind, item = "value", hint
    default = {} if f.default_factory is dict else f.default
    meta = dict(f.metadata)
    return Option(f.name, kind, item, default, meta.pop("help"), **meta)


@dataclass(frozen=True, kw_only=True)
class Command:
    """A command's contract; `name` is its sub-command."""

    name: ClassVar[str]

    @classmethod
    def about(cls) -> str:
        """What the command does: its docstring's first paragraph, on one line."""
        return " ".join((cls.__doc__ or "").split("\n\n")[0].split())

    @classmethod
    def arguments(cls) -> list[Option]:
        return _options(cls)

    def words(self) -> list[str]:
        """The command and its arguments: positionals first, then each option that is required or not its default."""
        head, tail = [self.name], []
        for o in self.arguments():
            value = getattr(self, o.name)
            if o.positional:
                head += o.words(value)
            elif o.kind == "flag":
                tail += [o.flag] if value else []
            elif o.required or value != o.default:
                tail += [o.flag, *o.words(value)]
        return head + tail

    def to_argv(self) -> str:
        """The words as one shell-quoted string: a rule's `{params.argv}`."""
        return shlex.join(self.words())

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> "Command":
        """The contract argparse parsed (a field not given keeps its default)."""
        given = {o.name: getattr(ns, o.name) for o in cls.arguments() if hasattr(ns, o.name)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()})


@cache
def _options(cls: type) -> list[Option]:
    hints = typing.get_type_hints(cls)
    return [_option(f, hints[f.name]) for f in dataclasses.fields(cls)]


# ---------------------------------------------------------------------------------------------- the commands
@dataclass(frozen=True, kw_only=True)
class Data(Command):
    """download (or generate) a dataset into data/{dataset}.npz"""

    name: ClassVar[str] = "data"
    dataset: str = arg(f"a dataset name {NAMES_HELP}")
    out: str = arg("the npz file to write; archives already in its folder are used, not downloaded")


@dataclass(frozen=True, kw_only=True)
class MlflowInit(Command):
    """create the MLflow store and one experiment per study"""

    name: ClassVar[str] = "mlflow-init"
    uri: str | None = arg("default: $SPARSENETS_TRACKING_URI", None)
    experiments: tuple[str, ...] = arg("one experiment per study")
    parents: tuple[str, ...] = arg("parent runs to create (one per method), each training run is nested under its "
                                   "method's", (), metavar="STUDY/DATASET/MODEL/METHOD")
    out: str | None = arg("a marker file to write once the store is ready", None)


@dataclass(frozen=True, kw_only=True)
class MlflowSummary(Command):
    """log each study's figures and claims.md on its MLflow summary run"""

    name: ClassVar[str] = "mlflow-summary"
    uri: str | None = arg("default: $SPARSENETS_TRACKING_URI", None)
    figures: dict = arg('each study and its figure files, e.g. {"phew": ["results/phew/figures/a.png"]}', {})
    claims: str = arg("claims.md")
    out: str = arg("a marker file naming the runs")


@dataclass(frozen=True, kw_only=True)
class _OneRun(Command):
    """What defines one run (and its mask): the fields mask and train share."""

    dataset: str = arg(f"a dataset name {NAMES_HELP}")
    data: str = arg("the dataset's npz file")
    model: str = arg(f"a model name {NAMES_HELP}")
    method: str = arg(f"a method name {NAMES_HELP}")
    density: float = arg("the kept fraction of the prunable weights, in (0, 1]")
    seed: int = arg("the run's seed (weights, mask and data order derive from it)")
    device: str = arg(DEVICE_HELP, "auto")


@dataclass(frozen=True, kw_only=True)
class Mask(_OneRun):
    """build a mask at initialisation and save it"""

    name: ClassVar[str] = "mask"
    options: dict = arg("method options", {})
    previous: str = arg("a nested method's (phew-res) mask at the next sparser density", "")
    threads: int = arg("CPU threads for torch", 1)
    out: str = arg("the mask file to write (.pt)")


@dataclass(frozen=True, kw_only=True)
class Train(_OneRun):
    """train one run under a mask; writes metrics.json, model.pt, mask.pt, structure.json"""

    name: ClassVar[str] = "train"
    study: str = arg("the study (its results folder and MLflow experiment)")
    mask: str = arg("the mask file the run starts from")
    out_dir: str = arg("the run's folder: metrics.json, model.pt, mask.pt, structure.json")
    recipe: dict = arg('the recipe, e.g. {"epochs": 2, "batch_size": 64}', {})
    variant: str = arg("original: a method's run; reinit: fresh weights on the mask; prune: mag's pruning phase",
                       "original")  # sparsenets.study.VARIANTS
    topology: str = arg("how the structure moves: static, dnw, rigl, gradual-magnitude", "static")
    topology_options: dict = arg('the topology\'s options, e.g. {"delta_t": 100}', {})
    init_weights: str = arg("start from these weights (IMP: the dense run's rewind.pt)", "")
    rewind_step: int | None = arg("also write rewind.pt, the weights after this many optimizer steps (0: at init)",
                                  None)
    tracking_uri: str | None = arg("MLflow URI (default: $SPARSENETS_TRACKING_URI; none: no tracking)", None)
    threads: int = arg("CPU threads for torch", 1)


@dataclass(frozen=True, kw_only=True)
class ImpMask(Command):
    """the next IMP level: prune a fraction of a trained run's remaining weights"""

    name: ClassVar[str] = "imp-mask"
    run_dir: str = arg("the trained run of the previous level (model.pt, mask.pt)")
    rate: float = arg("the fraction of its remaining weights to prune", 0.2)
    out: str = arg("the mask file to write (.pt)")


@dataclass(frozen=True, kw_only=True)
class Sensitivity(Command):
    """prune a trained run further (by magnitude, at random) and evaluate"""

    name: ClassVar[str] = "sensitivity"
    run_dir: str = arg("a finished run's folder (model.pt, mask.pt, metrics.json)")
    data: str = arg("the dataset's npz file")
    fractions: tuple[float, ...] = arg("further fractions of the kept weights to remove, in [0, 1)")
    precision: str = arg("as the run's recipe: bf16 autocast for bf16 (and auto on CUDA)", "auto",
                         choices=("auto", "fp32", "bf16"))
    recal_images: int = arg("training images BN statistics are re-estimated on", 2048)
    test_images: int = arg("evaluate on a fixed subset of this many test images (0: the whole test set)", 0)
    seed: int = arg("seed of the random removal", 0)
    device: str = arg(DEVICE_HELP, "auto")
    threads: int = arg("CPU threads for torch", 1)
    out: str = arg("the curve file to write (.json)")


@dataclass(frozen=True, kw_only=True)
class Claims(Command):
    """judge each study's claims (its protocol's) on its tidy tables"""

    name: ClassVar[str] = "claims"
    studies: dict = arg('each study to judge: its protocol, its tables and claim options, e.g. {"phew": {"protocol": '
                        '"phew", "tables": {"runs": "results/phew/tables/runs.csv"}, "options": {"claim_density_max": '
                        '0.11}}}; options: claim_density_max, focus_density, freeze_claim_epoch, equivalence_margin, '
                        'structural_floor, min_trace_gap_decades, trace_floor_decades, sensitivity_ranking, '
                        'sensitivity_bn', {})
    preset: str = arg("named in the header", "")
    data: tuple[str, ...] = arg("the data files the runs read (data/{dataset}.npz): their names and sha256 are "
                                "stated in claims.md, with the commit", ())
    md: str = arg("the verdicts with their numbers and test definitions (claims.md)")
    csv: str = arg("the tidy numbers behind every verdict (claims.csv)")


@dataclass(frozen=True, kw_only=True)
class Structure(Command):
    """print a mask's per-layer structure and totals"""

    name: ClassVar[str] = "structure"
    mask: str = arg("a mask file (.pt)", positional=True)
    json: bool = arg("print JSON (meta, summary, layers) instead of a table", False)


@dataclass(frozen=True, kw_only=True)
class Table(Command):
    """collect run files into a tidy CSV (one row per run, run and epoch, or run and layer)"""

    name: ClassVar[str] = "table"
    files: tuple[str, ...] = arg("metrics.json (runs, epochs) or structure.json (layers) files", positional=True)
    kind: str = arg("the table: one row per run, run and epoch, run and layer, ...", "runs",
                    choices=("runs", "epochs", "layers", "sensitivity", "indegree", "overlap"))
    out: str = arg("the CSV file to write")


@dataclass(frozen=True, kw_only=True)
class PaperTable(Command):
    """write a study's method x density accuracy table for a paper (CSV, LaTeX)"""

    name: ClassVar[str] = "paper-table"
    runs: str = arg("the study's runs table (results/{study}/tables/runs.csv)")
    study: str = arg("the study, named in the caption and label")
    preset: str = arg("the preset, named in the caption", "")
    csv: str = arg("one row per cell: mean, 95-percent t-interval, seeds")
    tex: str = arg("booktabs tables, one per network (\\usepackage{booktabs})")


@dataclass(frozen=True, kw_only=True)
class Figure(Command):
    """draw one paper figure from tidy tables"""

    name: ClassVar[str] = "figure"
    figure: str = arg("the figure: accuracy_vs_density, layer_widths, path_kernel, train_loss, reinit, sensitivity, "
                      "indegree, freezing", positional=True, metavar="NAME")
    tables: tuple[str, ...] = arg("the tidy tables (CSV) it reads")
    out: tuple[str, ...] = arg("output files (.png, .pdf)")
    options: dict = arg('the figure\'s options, e.g. {"density": 0.018}', {})


@dataclass(frozen=True, kw_only=True)
class Report(Command):
    """write the one-page HTML report: the grid, the claims, every figure with its caption"""

    name: ClassVar[str] = "report"
    context: dict = arg("the report job's context (sparsenets.study.Grid.report)")
    caption_template: str | None = arg("the figures' caption text (workflow/report/figure.rst)", None)
    out: str = arg("the HTML file to write")


@dataclass(frozen=True, kw_only=True)
class Names(Command):
    """print the known models, methods and datasets as JSON"""

    name: ClassVar[str] = "names"


@dataclass(frozen=True, kw_only=True)
class Plan(Command):
    """count a preset's jobs per study and estimate its GPU- and CPU-hours"""

    name: ClassVar[str] = "plan"
    preset: str | None = arg("default: the config's own", None)
    configfile: str = arg("the config file (default: config.yaml)", "config.yaml")
    threads: int = arg("CPU threads per job, for the CPU-hours", 1)
    calibrate: str | None = arg("a results folder: price epochs as its finished runs measured them, and count the "
                                "jobs left to run; with Snakemake's records of that run, price the preset's wall time "
                                "by the seconds each job took", None, metavar="RESULTS")
    cores: int | None = arg("with --calibrate: the cores the run gets (snakemake --cores; default: this machine's)",
                            None)


COMMANDS: dict[str, type[Command]] = {c.name: c for c in (
    Data, MlflowInit, MlflowSummary, Mask, Train, ImpMask, Sensitivity, Claims, Structure, Table, PaperTable, Figure,
    Report, Names, Plan)}


# ---------------------------------------------------------------------------------------- jobs' commands
def for_job(job: "Job", **given: Any) -> Command:
    """The command a job of the grid (sparsenets.study.expand) runs. `given`: what the workflow knows and the job
    does not, each set where the command has such a field (`threads`: the job's Snakemake threads)."""
    if job.kind not in _BUILDERS:
        raise ValueError(f"job kind {job.kind!r} ({job.name}) has no command: give it one in "
                         "sparsenets.commands._BUILDERS")
    command = _BUILDERS[job.kind](job)
    fields = {f.name for f in dataclasses.fields(command)}
    return dataclasses.replace(command, **{k: v for k, v in given.items() if k in fields})


def _words(value: str | tuple | list) -> tuple[str, ...]:
    """A list param, given as a list or as its words joined by spaces."""
    return tuple(value.split()) if isinstance(value, str) else tuple(value)


def _object(value: str | Mapping[str, Any]) -> dict:
    """A JSON-object param, given as a mapping or as its JSON text."""
    return json.loads(value) if isinstance(value, str) else dict(value)


def _file(value: str | tuple) -> str:
    """An optional input: "" where the job has none (an empty tuple)."""
    return value if isinstance(value, str) else ""


def _mask(job: "Job") -> Mask:
    run, params = job.run, job.params
    layer_matched = job.kind == "mask_layer_matched"  # random wiring with another run's per-layer counts
    return Mask(dataset=run.dataset, data=job.inputs["data"], model=run.model,
                method="random-like" if layer_matched else run.method, density=float(run.density),
                seed=int(run.seed), device="cpu" if layer_matched else params["device"],
                options=_object(params["options"]), previous=_file(job.inputs.get("previous", ())), out=job.output)


def _train(job: "Job") -> Train:
    run, params = job.run, job.params
    return Train(study=job.study, dataset=run.dataset, data=job.inputs["data"], model=run.model, method=run.method,
                 density=float(run.density), seed=int(run.seed), device=params["device"], mask=job.inputs["mask"],
                 out_dir=params["out_dir"], recipe=_object(params["recipe"]), variant=run.variant,
                 topology=params["topology"], topology_options=_object(params["options"]),
                 init_weights=_file(job.inputs["init"]), rewind_step=params["rewind_step"])


def _sensitivity(job: "Job") -> Sensitivity:
    p = job.params
    return Sensitivity(run_dir=p["run_dir"], data=job.inputs["data"],
                       fractions=tuple(float(f) for f in _words(p["fractions"])), precision=p["precision"],
                       test_images=int(p["test_images"]), seed=int(job.run.seed), device=p["device"], out=job.output)


def _claims(job: "Job") -> Claims:
    """params: the studies, each {"protocol", "tables", "options"}, and the preset."""
    return Claims(studies=dict(job.params["studies"]), preset=job.params["preset"], data=_words(job.inputs["data"]),
                  md=job.outputs["md"], csv=job.outputs["csv"])


def _summary(job: "Job") -> MlflowSummary:
    return MlflowSummary(figures=dict(job.params["studies"]), claims=job.inputs["claims"], out=job.output)


_BUILDERS: dict[str, Any] = {
    "dataset": lambda job: Data(dataset=job.key, out=job.output),
    "mlflow_init": lambda job: MlflowInit(experiments=_words(job.params["experiments"]),
                                          parents=_words(job.params.get("parents", ())), out=job.output),
    "mlflow_summary": _summary,
    "mask": _mask,
    "mask_layer_matched": _mask,
    "imp_mask": lambda job: ImpMask(run_dir=job.params["run_dir"], rate=float(job.params["rate"]), out=job.output),
    **dict.fromkeys(("train", "train_dense", "train_reinit", "train_prune"), _train),
    "sensitivity": _sensitivity,
    "claims": _claims,
    "table": lambda job: Table(files=_words(job.inputs["files"]), kind=job.key.rsplit("/", 1)[1], out=job.output),
    "paper_table": lambda job: PaperTable(runs=job.inputs["table"], study=job.study, preset=job.params["preset"],
                                          csv=job.outputs["csv"], tex=job.outputs["tex"]),
    "figure": lambda job: Figure(figure=job.key.split("/", 1)[1], tables=_words(job.inputs["tables"]),
                                 out=(job.outputs["png"], job.outputs["pdf"]), options=_object(job.params["options"])),
    "report": lambda job: Report(context=_object(job.params["context"]), out=job.output),
}


# ------------------------------------------------------------------------------------------- the parser
def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e}): {text!r}") from e
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"not a JSON object: {text!r}")
    return value


def _add(parser: argparse.ArgumentParser, o: Option) -> None:
    """The option's argparse argument. Its default is left out of the namespace: the contract's applies."""
    how: dict[str, Any] = {"help": o.help}
    if o.kind == "flag":
        how["action"] = "store_true"
    else:
        how["type"] = _json_object if o.kind == "json" else o.type
        how["metavar"] = o.metavar or ("JSON" if o.kind == "json" else None)
        if o.kind == "many":
            how["nargs"] = "+" if o.required else "*"
        if o.choices:
            how["choices"] = o.choices
    if o.positional:
        parser.add_argument(o.name, **how)
    else:
        parser.add_argument(o.flag, dest=o.name, required=o.required, default=argparse.SUPPRESS, **how)


def parser() -> argparse.ArgumentParser:
    """`python -m sparsenets`'s parser: one subparser per contract; the parsed namespace's `contract` is its class."""
    p = argparse.ArgumentParser(prog="sparsenets", description="`python -m sparsenets CMD`: one sub-command per "
                                "Snakemake rule.")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="CMD")
    for name, cls in COMMANDS.items():
        s = sub.add_parser(name, help=cls.about(), description=cls.about())
        s.set_defaults(contract=cls)
        s.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        for o in cls.arguments():
            _add(s, o)
    return p


def parse(argv: list[str] | None = None) -> tuple[Command, bool]:
    """The contract a command line spells, and whether it asked for --debug."""
    ns = parser().parse_args(argv)
    return ns.contract.from_namespace(ns), ns.debug


# ------------------------------------------------------------------------------------ the reference
def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _spelling(o: Option) -> str:
    metavar = o.metavar or ("JSON" if o.kind == "json" else o.name.upper())
    many = " …" if o.kind == "many" else ""
    if o.positional:
        return f"`{o.metavar or o.name}`{many}"
    return f"`{o.flag}`" if o.kind == "flag" else f"`{o.flag} {metavar}`{many}"


def _default(o: Option) -> str:
    if o.required:
        return "required"
    empty = o.kind == "flag" or o.default is None or o.default in ("", (), {})
    return "" if empty else f"`{o.default}`"


def reference() -> str:
    """docs/CLI.md: the table of commands, then every command's arguments with their defaults and help."""
    lines = ["# Command line reference: `python -m sparsenets`", "",
             "Generated from the command contracts (`src/sparsenets/commands.py`) by `.venv/bin/python -m "
             "sparsenets.commands > docs/CLI.md`; `tests/test_docs.py` fails when it is stale. Each Snakemake rule "
             "runs one of these commands with the arguments its job's contract spells; all of them run by hand too, "
             "with the venv's Python (`.venv/bin/python -m sparsenets CMD --help`).", "",
             f"Every command takes `--debug` ({DEBUG_HELP}). An expected error (a bad key, value or file) prints "
             "one line naming it and exits with 1. A JSON argument is one JSON object.", "",
             "| command | what it does |", "|---|---|"]
    lines += [f"| [`{name}`](#{name}) | {_cell(cls.about())} |" for name, cls in COMMANDS.items()]
    for name, cls in COMMANDS.items():
        lines += ["", f"## {name}", "", _cell(cls.about())]
        if cls.arguments():
            lines += ["", "| argument | default | what it is |", "|---|---|---|"]
            lines += [f"| {_spelling(o)} | {_default(o)} | {_cell(o.help)} |" for o in cls.arguments()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
