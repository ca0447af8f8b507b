"""`python -m sparsenets CMD`: one sub-command per Snakemake rule.

Imports are lazy, so a job pays only for what it uses (no mlflow or seaborn in a mask job).
A mistake the package detects (a bad key, value or file) prints one `error:` line naming it and the fix,
and exits 1; its traceback shows only with --debug or SPARSENETS_DEBUG=1 (see `expected`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from typing import Any, Callable


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e}): {text!r}") from e


def keep_freed_memory() -> None:
    """Stop glibc from handing the freed activations of a step back to the OS, only to fault them in
    again the next step: a tenth of a CPU training step (README, Performance). Not glibc: no change."""
    import ctypes

    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: blocks up to 32 MB come from the heap, not fresh mmaps
        mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GB of freed heap for the next step


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cmd_data(a: argparse.Namespace) -> None:
    from . import data

    path = data.prepare(a.dataset, a.out)
    ds = data.load(path)
    _log(f"{a.dataset}: {len(ds.y_train)} train / {len(ds.y_test)} test images of shape {ds.input_shape}, "
         f"{ds.num_classes} classes -> {path}")


def cmd_mlflow_init(a: argparse.Namespace) -> None:
    from .tracking import init_store, redact

    init_store(a.uri, a.experiments, a.parents)
    uri = redact(a.uri, a.uri)
    _log(f"tracking store ready at {uri} with experiments {', '.join(a.experiments)} and {len(a.parents)} "
         "parent runs")
    if a.out:
        from .io import write_json

        write_json(a.out, {"uri": uri, "experiments": a.experiments, "parents": a.parents})


def cmd_mlflow_summary(a: argparse.Namespace) -> None:
    from .io import write_json
    from .tracking import experiment_ids, redact, summary_run

    runs = {}
    for name, *figures in a.study or []:
        runs[name] = summary_run(a.uri, name, figures, a.claims)
        _log(f"summary run {runs[name]} of study {name}: {len(figures)} figure files and {a.claims}")
    write_json(a.out, {"uri": redact(a.uri, a.uri), "runs": runs, "experiments": experiment_ids(a.uri, list(runs))})


def cmd_mask(a: argparse.Namespace) -> None:
    import torch

    from .experiments import make_mask

    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    mask = make_mask(a.model, a.data, a.method, a.density, a.seed, a.out, options=a.options, device=a.device,
                     previous=a.previous or None)
    _log(f"{a.method} mask for {a.model} at density {a.density}: kept {mask.kept} of {mask.total} "
         f"(density {mask.density:.6f}) in {time.perf_counter() - t0:.2f}s -> {a.out}")


def cmd_imp_mask(a: argparse.Namespace) -> None:
    from .experiments import imp_mask

    mask = imp_mask(a.run_dir, a.rate, a.out)
    _log(f"IMP level {mask.meta['level']}: kept {mask.kept} of {mask.total} (density {mask.density:.6f}) -> {a.out}")


def cmd_sensitivity(a: argparse.Namespace) -> None:
    import torch

    from .io import write_json
    from .sensitivity import run_curve

    torch.set_num_threads(a.threads)
    curve = run_curve(a.run_dir, a.data, a.fractions, a.seed, a.device, a.precision, a.recal_images, a.test_images)
    write_json(a.out, curve)
    _log(f"{len(curve['rows'])} points of further pruning for {a.run_dir} -> {a.out}")
    if os.environ.get("SPARSENETS_TRACKING_URI"):
        _log_sensitivity_areas(a.out, os.environ["SPARSENETS_TRACKING_URI"])


def _log_sensitivity_areas(curve_file: str, uri: str) -> None:
    """C5's and C5b's numbers, the areas under the run's normalised curves (global ranking, stale BN), onto its
    MLflow run."""
    from .claims import Missing, _areas
    from .study import Run
    from .tables import sensitivity_table
    from .tracking import log_to_job_run

    curves = sensitivity_table([curve_file])
    values = {}
    for mode in ("magnitude", "random"):
        try:
            areas, _, _ = _areas(curves[(curves["mode"] == mode) & ~curves["bn_recalibrated"]
                                        & (curves["ranking"] == "global")])
        except Missing:
            continue
        values.update({f"sensitivity_area_{mode}": v for by_seed in areas.values() for v in by_seed.values()})
    with open(curve_file) as f:
        spec = json.load(f)["spec"]
    variant = "" if spec.get("variant", "original") == "original" else spec["variant"]
    job = Run(spec["dataset"], spec["model"], spec["method"], spec["density"], spec["seed"], variant).name
    if values and log_to_job_run(uri, spec["study"], job, values):
        _log(f"sensitivity areas {values} -> the MLflow run of {job}")


def cmd_claims(a: argparse.Namespace) -> None:
    import pandas as pd

    from .claims import ClaimOptions, StudyTables, build, write

    def read(path: str) -> Any:
        try:
            return pd.read_csv(path)
        except pd.errors.EmptyDataError:  # a study with no rows yet: an empty table, judged "not enough runs"
            return pd.DataFrame()

    if not isinstance(a.options, dict) or not all(isinstance(v, dict) for v in a.options.values()):
        raise ValueError(f"--options must be a JSON object of study -> claim options, got {a.options!r}")
    studies, tables = [], []
    for name, *rest in a.study or []:
        if not rest:
            raise ValueError(f"--study {name}: give its protocol, then its tables as TABLE=PATH")
        protocol, paths = rest[0], {}
        for arg in rest[1:]:
            kind, sep, path = arg.partition("=")
            if not (sep and kind and path):
                raise ValueError(f"--study {name}: {arg!r} is not TABLE=PATH")
            paths[kind] = path
        tables += paths.values()
        studies.append(StudyTables(name, protocol, {k: read(p) for k, p in paths.items()},
                                   ClaimOptions.from_dict(a.options.get(name))))
    unknown = sorted(set(a.options) - {s.study for s in studies})
    if unknown:
        raise ValueError(f"--options names no --study: {', '.join(unknown)}")
    claims = build(studies)
    given = {s.study: {k: getattr(s.options, k) for k in a.options.get(s.study, {})} for s in studies}
    from . import provenance

    data = {os.path.basename(path).removesuffix(".npz"): path for path in a.data}
    write(claims, a.md, a.csv, preset=a.preset, tables=tables, options=given,
          provenance=provenance.markdown(provenance.collect(a.preset, data)))
    for c in claims:
        _log(f"{c['study']} {c['id']} {c['network'] or '(no network)'}: {c['verdict']}")


def cmd_train(a: argparse.Namespace) -> None:
    import torch

    from .experiments import RunSpec, run_training
    from .train import Recipe

    torch.set_num_threads(a.threads)
    spec = RunSpec(a.study, a.dataset, a.model, a.method, a.density, a.seed, a.variant)
    recipe = Recipe.from_dict(a.recipe)
    _log(f"training {spec.study}/{spec.name} ({a.topology}) for {recipe.epochs} epochs")
    result = run_training(spec, recipe, data_file=a.data, mask_file=a.mask, out_dir=a.out_dir,
                          topology=a.topology, topology_options=a.topology_options,
                          init_weights=a.init_weights or None, rewind_step=a.rewind_step,
                          tracking_uri=a.tracking_uri, device=a.device, log=_log)
    if result.diverged:  # a recorded result, not a failed job: metrics.json says diverged, MLflow FAILED
        _log(f"done: the run diverged ({result.diverged})")
    else:
        _log(f"done: final test accuracy {result.final['test_acc']:.4f}, best {result.best_test_acc:.4f}")


def cmd_structure(a: argparse.Namespace) -> None:
    from .masks import Mask
    from .models import build_model
    from .structure import format_table, layer_table, summary

    mask = Mask.load(a.mask)
    meta = mask.meta
    missing = [k for k in ("model", "num_classes", "input_shape") if k not in meta]
    if missing:
        raise SystemExit(f"error: mask file {a.mask} has no {', '.join(missing)} in its metadata")
    model = build_model(meta["model"], meta["num_classes"], tuple(meta["input_shape"]), seed=meta.get("weight_seed"))
    mask.check_model(model, source=f"mask file {a.mask}")
    rows, totals = layer_table(model, mask, tuple(meta["input_shape"])), summary(model, mask, tuple(meta["input_shape"]))
    if a.json:
        print(json.dumps({"meta": {k: v for k, v in meta.items()}, "summary": totals, "layers": rows}, indent=1,
                         default=str))
    else:
        print(f"{a.mask}: {meta.get('method', '?')} on {meta['model']}")
        print(format_table(rows, totals))


def cmd_table(a: argparse.Namespace) -> None:
    from . import tables

    df = getattr(tables, f"{a.kind}_table")(a.files)
    _write_csv(df, a.out)
    _log(f"{len(df)} rows -> {a.out}")


def cmd_paper_table(a: argparse.Namespace) -> None:
    from . import paper_tables

    table = paper_tables.write(a.runs, a.csv, a.tex, study=a.study, preset=a.preset)
    _log(f"{len(table)} cells -> {a.csv}, {a.tex}")


def cmd_figure(a: argparse.Namespace) -> None:
    from . import figures

    figures.draw(a.name, a.tables, a.out, **(a.options or {}))
    _log(f"figure {a.name} -> {', '.join(a.out)}")


def cmd_report(a: argparse.Namespace) -> None:
    from . import report

    report.write(report.context_json(a.context), a.out, a.caption_template)
    _log(f"report -> {a.out}")


def _write_csv(df: Any, path: str) -> None:
    from .io import write_text

    write_text(path, df.to_csv(index=False))


def cmd_plan(a: argparse.Namespace) -> None:
    import torch

    from .plan import format_plan, plan

    if not os.path.isfile(a.configfile):
        raise FileNotFoundError(f"config file {a.configfile} not found in {os.getcwd()}: run plan in the repository "
                                "root (where config.yaml is), or give --configfile PATH")
    torch.set_num_threads(a.threads)
    preset, plans = plan(a.preset, a.configfile, a.calibrate)
    print(format_plan(preset, plans))
    if a.calibrate:
        from .plan import format_measured

        print(format_measured(a.calibrate, plans, a.cores or os.cpu_count() or 1, a.threads))


def cmd_names(a: argparse.Namespace) -> None:
    from .data import DATASETS
    from .models import MODELS
    from . import pruning, topology

    pruning.load_all()
    topology.load_all()
    print(json.dumps({"models": sorted(MODELS), "methods": sorted(pruning.METHODS), "datasets": sorted(DATASETS),
                      "topologies": topology.methods()}))


DEBUG_HELP = "show the traceback of an expected error too (also: SPARSENETS_DEBUG=1)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sparsenets", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="CMD")

    def add(name: str, fn: Callable[[argparse.Namespace], None], help: str) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help, description=help)
        s.set_defaults(fn=fn)
        s.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        return s

    s = add("data", cmd_data, "download (or generate) a dataset into data/{dataset}.npz")
    s.add_argument("--dataset", required=True, help="a dataset name (python -m sparsenets names)")
    s.add_argument("--out", required=True, help="the npz file to write; archives already in its folder are used, not downloaded")

    s = add("mlflow-init", cmd_mlflow_init, "create the MLflow store and one experiment per study")
    s.add_argument("--uri", help="default: $SPARSENETS_TRACKING_URI")
    s.add_argument("--experiments", nargs="+", required=True, help="one experiment per study")
    s.add_argument("--parents", nargs="*", default=[], metavar="STUDY/DATASET/MODEL/METHOD",
                   help="parent runs to create (one per method), each training run is nested under its method's")
    s.add_argument("--out", help="a marker file to write once the store is ready")

    s = add("mlflow-summary", cmd_mlflow_summary, "log each study's figures and claims.md on its MLflow summary run")
    s.add_argument("--uri", help="default: $SPARSENETS_TRACKING_URI")
    s.add_argument("--study", nargs="+", action="append", metavar=("NAME", "FIGURE"),
                   help="a study and its figure files; once per study")
    s.add_argument("--claims", required=True, help="claims.md")
    s.add_argument("--out", required=True, help="a marker file naming the runs")

    s = add("mask", cmd_mask, "build a mask at initialisation and save it")
    _run_args(s, study=False)
    s.add_argument("--options", type=_json_arg, default={}, help="method options as JSON")
    s.add_argument("--previous", default="", help="a nested method's (phew-res) mask at the next sparser density")
    s.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    s.add_argument("--out", required=True, help="the mask file to write (.pt)")

    s = add("train", cmd_train, "train one run under a mask; writes metrics.json, model.pt, mask.pt, structure.json")
    _run_args(s, study=True)
    s.add_argument("--mask", required=True, help="the mask file the run starts from")
    s.add_argument("--out-dir", required=True, help="the run's folder: metrics.json, model.pt, mask.pt, structure.json")
    s.add_argument("--recipe", type=_json_arg, default={}, help="recipe as JSON")
    s.add_argument("--variant", default="",
                   help="\"\" for a method's run; reinit: fresh weights on the mask; prune: mag's pruning phase")
    s.add_argument("--topology", default="static", help="how the structure moves: static, dnw, rigl, gradual-magnitude")
    s.add_argument("--topology-options", type=_json_arg, default={},
                   help="the topology's options as JSON, e.g. {\"delta_t\": 100}")
    s.add_argument("--init-weights", default="", help="start from these weights (IMP: the dense run's rewind.pt)")
    s.add_argument("--rewind-step", type=int, default=None,
                   help="also write rewind.pt, the weights after this many optimizer steps (0: at init)")
    s.add_argument("--tracking-uri", default=None, help="MLflow URI (default: $SPARSENETS_TRACKING_URI; none: no tracking)")
    s.add_argument("--threads", type=int, default=1, help="CPU threads for torch")

    s = add("imp-mask", cmd_imp_mask, "the next IMP level: prune a fraction of a trained run's remaining weights")
    s.add_argument("--run-dir", required=True, help="the trained run of the previous level (model.pt, mask.pt)")
    s.add_argument("--rate", type=float, default=0.2, help="the fraction of its remaining weights to prune")
    s.add_argument("--out", required=True, help="the mask file to write (.pt)")

    s = add("sensitivity", cmd_sensitivity, "prune a trained run further (by magnitude, at random) and evaluate")
    s.add_argument("--run-dir", required=True, help="a finished run's folder (model.pt, mask.pt, metrics.json)")
    s.add_argument("--data", required=True, help="the dataset's npz file")
    s.add_argument("--fractions", type=float, nargs="+", required=True,
                   help="further fractions of the kept weights to remove, in [0, 1)")
    s.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="as the run's recipe: bf16 autocast for bf16 (and auto on CUDA)")
    s.add_argument("--recal-images", type=int, default=2048, help="training images BN statistics are re-estimated on")
    s.add_argument("--test-images", type=int, default=0,
                   help="evaluate on a fixed subset of this many test images (0: the whole test set)")
    s.add_argument("--seed", type=int, default=0, help="seed of the random removal")
    s.add_argument("--device", default="auto", help="auto (a free GPU, else the CPU), cpu, cuda, cuda:N")
    s.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    s.add_argument("--out", required=True, help="the curve file to write (.json)")

    s = add("claims", cmd_claims, "judge each study's claims (its protocol's) on its tidy tables")
    s.add_argument("--study", nargs="+", action="append", metavar=("NAME", "PROTOCOL TABLE=PATH"),
                   help="a study to judge: its name, protocol and tables, e.g. --study phew phew "
                        "runs=results/phew/tables/runs.csv layers=results/phew/tables/layers.csv; once per study")
    s.add_argument("--preset", default="", help="named in the header")
    s.add_argument("--options", type=_json_arg, default={},
                   help="claim options per study as JSON, e.g. {\"phew\": {\"claim_density_max\": 0.11}}: "
                        "claim_density_max, focus_density, freeze_claim_epoch, equivalence_margin, structural_floor, "
                        "min_trace_gap_decades, trace_floor_decades, sensitivity_ranking, sensitivity_bn")
    s.add_argument("--data", nargs="*", default=[], help="the data files the runs read (data/{dataset}.npz): their "
                   "names and sha256 are stated in claims.md, with the commit")
    s.add_argument("--md", required=True, help="the verdicts with their numbers and test definitions (claims.md)")
    s.add_argument("--csv", required=True, help="the tidy numbers behind every verdict (claims.csv)")

    s = add("structure", cmd_structure, "print a mask's per-layer structure and totals")
    s.add_argument("mask", help="a mask file (.pt)")
    s.add_argument("--json", action="store_true", help="print JSON (meta, summary, layers) instead of a table")

    s = add("table", cmd_table, "collect run files into a tidy CSV (one row per run, run and epoch, or run and layer)")
    s.add_argument("--kind", choices=["runs", "epochs", "layers", "sensitivity", "indegree", "overlap"],
                   default="runs", help="the table: one row per run, run and epoch, run and layer, ...")
    s.add_argument("--out", required=True, help="the CSV file to write")
    s.add_argument("files", nargs="+", help="metrics.json (runs, epochs) or structure.json (layers) files")

    s = add("paper-table", cmd_paper_table, "write a study's method x density accuracy table for a paper (CSV, LaTeX)")
    s.add_argument("--runs", required=True, help="the study's runs table (results/{study}/tables/runs.csv)")
    s.add_argument("--study", required=True, help="the study, named in the caption and label")
    s.add_argument("--preset", default="", help="the preset, named in the caption")
    s.add_argument("--csv", required=True, help="one row per cell: mean, 95-percent t-interval, seeds")
    s.add_argument("--tex", required=True, help="booktabs tables, one per network (\\usepackage{booktabs})")

    s = add("figure", cmd_figure, "draw one paper figure from tidy tables")
    s.add_argument("name", help="the figure: accuracy_vs_density, layer_widths, path_kernel, train_loss, reinit, "
                                "sensitivity, indegree, freezing")
    s.add_argument("--tables", nargs="+", required=True, help="the tidy tables (CSV) it reads")
    s.add_argument("--out", nargs="+", required=True, help="output files (.png, .pdf)")
    s.add_argument("--options", type=_json_arg, default={},
                   help="the figure's options as JSON, e.g. {\"density\": 0.018}")

    s = add("report", cmd_report, "write the one-page HTML report: the grid, the claims, every figure with its caption")
    s.add_argument("--context", required=True, help="JSON: the report job's context (sparsenets.study.Grid.report)")
    s.add_argument("--caption-template", help="the figures' caption text (workflow/report/figure.rst)")
    s.add_argument("--out", required=True, help="the HTML file to write")
    add("names", cmd_names, "print the known models, methods and datasets as JSON")

    s = add("plan", cmd_plan, "count a preset's jobs per study and estimate its GPU- and CPU-hours")
    s.add_argument("--preset", help="default: the config's own")
    s.add_argument("--configfile", default="config.yaml", help="the config file (default: config.yaml)")
    s.add_argument("--threads", type=int, default=1, help="CPU threads per job, for the CPU-hours")
    s.add_argument("--calibrate", metavar="RESULTS", help="a results folder: price epochs as its finished runs "
                   "measured them, and count the jobs left to run; with Snakemake's records of that run, price "
                   "the preset's wall time by the seconds each job took")
    s.add_argument("--cores", type=int, help="with --calibrate: the cores the run gets (snakemake --cores; "
                   "default: this machine's)")
    return p


def _run_args(s: argparse.ArgumentParser, study: bool) -> None:
    if study:
        s.add_argument("--study", required=True, help="the study (its results folder and MLflow experiment)")
    s.add_argument("--dataset", required=True, help="a dataset name (python -m sparsenets names)")
    s.add_argument("--data", required=True, help="the dataset's npz file")
    s.add_argument("--model", required=True, help="a model name (python -m sparsenets names)")
    s.add_argument("--method", required=True, help="a method name (python -m sparsenets names)")
    s.add_argument("--density", type=float, required=True, help="the kept fraction of the prunable weights, in (0, 1]")
    s.add_argument("--seed", type=int, required=True,
                   help="the run's seed (weights, mask and data order derive from it)")
    s.add_argument("--device", default="auto", help="auto (a free GPU, else the CPU), cpu, cuda, cuda:N")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    for key in ("tracking_uri", "uri"):  # from the environment: a URI may hold a password, not for `ps`
        if getattr(args, key, "unset") is None:
            args.__dict__[key] = os.environ.get("SPARSENETS_TRACKING_URI")
    if getattr(args, "uri", "unset") is None:
        build_parser().error("no tracking URI: give --uri or set SPARSENETS_TRACKING_URI")
    from .signals import Terminated, exit_on_signals

    try:
        with exit_on_signals():  # SIGTERM/SIGINT unwind the job: no partial output, no temporary file
            args.fn(args)
    except Terminated as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    except EXPECTED as e:
        debug = getattr(args, "debug", False) or os.environ.get("SPARSENETS_DEBUG", "") not in ("", "0")
        if debug or not expected(e):  # a bug, or a failure deep inside a library: the trace is the clue
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


EXPECTED = (ValueError, OSError, RuntimeError, ArithmeticError)
_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def expected(e: BaseException) -> bool:
    """Whether `e` is a mistake the package detected on purpose: raised by a `raise` statement of its own
    code, whose message names the key, file or value and the fix. Such an error prints that message only
    (its trace with --debug or SPARSENETS_DEBUG=1); anything else, a bug or an error inside a library,
    keeps its trace."""
    frames = traceback.extract_tb(e.__traceback__)
    if not isinstance(e, EXPECTED) or not frames:
        return False
    last = frames[-1]
    return os.path.abspath(last.filename).startswith(_PACKAGE + os.sep) and (last.line or "").startswith("raise")
