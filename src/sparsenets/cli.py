"""`python -m sparsenets CMD`: one sub-command per Snakemake rule, each the handler of its contract
(sparsenets.commands: the fields, the parser, a job's arguments and docs/CLI.md come from there).

Imports are lazy, so a job pays only for what it uses (no mlflow or seaborn in a mask job).
A mistake the package detects (a bad key, value or file) prints one `error:` line naming it and the fix,
and exits 1; its traceback shows only with --debug or SPARSENETS_DEBUG=1 (see `expected`).
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any, Callable

from . import commands


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


def cmd_data(c: commands.Data) -> None:
    from . import data

    path = data.prepare(c.dataset, c.out)
    ds = data.load(path)
    _log(f"{c.dataset}: {len(ds.y_train)} train / {len(ds.y_test)} test images of shape {ds.input_shape}, "
         f"{ds.num_classes} classes -> {path}")


def _store(uri: str | None) -> str:
    """The tracking store: --uri, else $SPARSENETS_TRACKING_URI (a URI may hold a password, not for `ps`)."""
    uri = uri or os.environ.get("SPARSENETS_TRACKING_URI")
    if not uri:
        raise ValueError("no tracking URI: give --uri or set SPARSENETS_TRACKING_URI")
    return uri


def cmd_mlflow_init(c: commands.MlflowInit) -> None:
    from .tracking import init_store, redact

    uri = _store(c.uri)
    init_store(uri, list(c.experiments), list(c.parents))
    shown = redact(uri, uri)
    _log(f"tracking store ready at {shown} with experiments {', '.join(c.experiments)} and {len(c.parents)} "
         "parent runs")
    if c.out:
        from .io import write_json

        write_json(c.out, {"uri": shown, "experiments": list(c.experiments), "parents": list(c.parents)})


def cmd_mlflow_summary(c: commands.MlflowSummary) -> None:
    from .io import write_json
    from .tracking import experiment_ids, redact, summary_run

    uri, runs = _store(c.uri), {}
    for name, figures in c.figures.items():
        runs[name] = summary_run(uri, name, list(figures), c.claims)
        _log(f"summary run {runs[name]} of study {name}: {len(figures)} figure files and {c.claims}")
    write_json(c.out, {"uri": redact(uri, uri), "runs": runs, "experiments": experiment_ids(uri, list(runs))})


def cmd_mask(c: commands.Mask) -> None:
    import torch

    from .experiments import make_mask

    torch.set_num_threads(c.threads)
    t0 = time.perf_counter()
    mask = make_mask(c.model, c.data, c.method, c.density, c.seed, c.out, options=dict(c.options), device=c.device,
                     previous=c.previous or None)
    _log(f"{c.method} mask for {c.model} at density {c.density}: kept {mask.kept} of {mask.total} "
         f"(density {mask.density:.6f}) in {time.perf_counter() - t0:.2f}s -> {c.out}")


def cmd_imp_mask(c: commands.ImpMask) -> None:
    from .experiments import imp_mask

    mask = imp_mask(c.run_dir, c.rate, c.out)
    _log(f"IMP level {mask.meta['level']}: kept {mask.kept} of {mask.total} (density {mask.density:.6f}) -> {c.out}")


def cmd_sensitivity(c: commands.Sensitivity) -> None:
    import torch

    from .io import write_json
    from .sensitivity import run_curve

    torch.set_num_threads(c.threads)
    curve = run_curve(c.run_dir, c.data, list(c.fractions), c.seed, c.device, c.precision, c.recal_images,
                      c.test_images)
    write_json(c.out, curve)
    _log(f"{len(curve['rows'])} points of further pruning for {c.run_dir} -> {c.out}")
    if os.environ.get("SPARSENETS_TRACKING_URI"):
        _log_sensitivity_areas(c.out, os.environ["SPARSENETS_TRACKING_URI"])


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
    run = Run.from_tags(spec)
    if values and log_to_job_run(uri, run.study, run.name, values):
        _log(f"sensitivity areas {values} -> the MLflow run of {run.name}")


def cmd_claims(c: commands.Claims) -> None:
    from . import provenance
    from .claims import build, write

    studies = [_study_tables(name, spec) for name, spec in c.studies.items()]
    claims = build(studies)
    given = {s.study: {k: getattr(s.options, k) for k in c.studies[s.study].get("options", {})} for s in studies}
    data = {os.path.basename(path).removesuffix(".npz"): path for path in c.data}
    write(claims, c.md, c.csv, preset=c.preset, tables=[p for s in c.studies.values() for p in s["tables"].values()],
          options=given, provenance=provenance.markdown(provenance.collect(c.preset, data)))
    for row in claims:
        _log(f"{row['study']} {row['id']} {row['network'] or '(no network)'}: {row['verdict']}")


def _study_tables(name: str, spec: Any) -> Any:
    """One study of `claims --studies`: its protocol, its tables read (an empty file: an empty table, judged "not
    enough runs") and its claim options."""
    import pandas as pd

    from .claims import ClaimOptions, StudyTables

    def read(path: str) -> Any:
        try:
            return pd.read_csv(path)
        except pd.errors.EmptyDataError:
            return pd.DataFrame()

    shape = '{"protocol": NAME, "tables": {TABLE: PATH, ...}, "options": {...}}'
    if not isinstance(spec, dict) or not isinstance(spec.get("protocol"), str) or not isinstance(
            spec.get("tables", {}), dict) or not isinstance(spec.get("options", {}), dict):
        raise ValueError(f"--studies: study {name!r} is {json.dumps(spec)}, not {shape}")
    return StudyTables(name, spec["protocol"], {k: read(p) for k, p in spec.get("tables", {}).items()},
                       ClaimOptions.from_dict(spec.get("options")))


def cmd_train(c: commands.Train) -> None:
    import torch

    from .experiments import run_training
    from .study import Run, format_density
    from .train import Recipe

    torch.set_num_threads(c.threads)
    run = Run(dataset=c.dataset, model=c.model, method=c.method, density=format_density(c.density), seed=c.seed,
              variant=c.variant, study=c.study)
    recipe = Recipe.from_dict(dict(c.recipe))
    _log(f"training {run.study}/{run.name} ({c.topology}) for {recipe.epochs} epochs")
    result = run_training(run, recipe, data_file=c.data, mask_file=c.mask, out_dir=c.out_dir, topology=c.topology,
                          topology_options=dict(c.topology_options), init_weights=c.init_weights or None,
                          rewind_step=c.rewind_step, tracking_uri=c.tracking_uri or _env_uri(), device=c.device,
                          log=_log)
    if result.diverged:  # a recorded result, not a failed job: metrics.json says diverged, MLflow FAILED
        _log(f"done: the run diverged ({result.diverged})")
    else:
        _log(f"done: final test accuracy {result.final['test_acc']:.4f}, best {result.best_test_acc:.4f}")


def _env_uri() -> str | None:
    return os.environ.get("SPARSENETS_TRACKING_URI")


def cmd_structure(c: commands.Structure) -> None:
    from .masks import Mask
    from .models import build_model
    from .structure import format_table, layer_table, summary

    mask = Mask.load(c.mask)
    meta = mask.meta
    missing = [k for k in ("model", "num_classes", "input_shape") if k not in meta]
    if missing:
        raise SystemExit(f"error: mask file {c.mask} has no {', '.join(missing)} in its metadata")
    model = build_model(meta["model"], meta["num_classes"], tuple(meta["input_shape"]), seed=meta.get("weight_seed"))
    mask.check_model(model, source=f"mask file {c.mask}")
    rows, totals = layer_table(model, mask, tuple(meta["input_shape"])), summary(model, mask, tuple(meta["input_shape"]))
    if c.json:
        print(json.dumps({"meta": {k: v for k, v in meta.items()}, "summary": totals, "layers": rows}, indent=1,
                         default=str))
    else:
        print(f"{c.mask}: {meta.get('method', '?')} on {meta['model']}")
        print(format_table(rows, totals))


def cmd_table(c: commands.Table) -> None:
    from . import tables

    df = getattr(tables, f"{c.kind}_table")(list(c.files))
    _write_csv(df, c.out)
    _log(f"{len(df)} rows -> {c.out}")


def cmd_paper_table(c: commands.PaperTable) -> None:
    from . import paper_tables

    table = paper_tables.write(c.runs, c.csv, c.tex, study=c.study, preset=c.preset)
    _log(f"{len(table)} cells -> {c.csv}, {c.tex}")


def cmd_figure(c: commands.Figure) -> None:
    from . import figures

    figures.draw(c.figure, list(c.tables), list(c.out), **c.options)
    _log(f"figure {c.figure} -> {', '.join(c.out)}")


def cmd_report(c: commands.Report) -> None:
    from . import report

    report.write(c.context, c.out, c.caption_template)
    _log(f"report -> {c.out}")


def _write_csv(df: Any, path: str) -> None:
    from .io import write_text

    write_text(path, df.to_csv(index=False))


def cmd_plan(c: commands.Plan) -> None:
    import torch

    from .plan import format_plan, plan

    if not os.path.isfile(c.configfile):
        raise FileNotFoundError(f"config file {c.configfile} not found in {os.getcwd()}: run plan in the repository "
                                "root (where config.yaml is), or give --configfile PATH")
    torch.set_num_threads(c.threads)
    preset, plans = plan(c.preset, c.configfile, c.calibrate)
    print(format_plan(preset, plans))
    if c.calibrate:
        from .plan import format_measured

        print(format_measured(c.calibrate, plans, c.cores or os.cpu_count() or 1, c.threads))


def cmd_names(c: commands.Names) -> None:
    from .catalogue import names

    print(json.dumps(names()))  # the catalogue's: the registries register against it (tests/test_catalogue.py)


HANDLERS: dict[type[commands.Command], Callable[[Any], None]] = {
    commands.Data: cmd_data, commands.MlflowInit: cmd_mlflow_init, commands.MlflowSummary: cmd_mlflow_summary,
    commands.Mask: cmd_mask, commands.Train: cmd_train, commands.ImpMask: cmd_imp_mask,
    commands.Sensitivity: cmd_sensitivity, commands.Claims: cmd_claims, commands.Structure: cmd_structure,
    commands.Table: cmd_table, commands.PaperTable: cmd_paper_table, commands.Figure: cmd_figure,
    commands.Report: cmd_report, commands.Names: cmd_names, commands.Plan: cmd_plan,
}  # each contract's handler (tests/test_commands.py checks that every contract has one)


def main(argv: list[str] | None = None) -> int:
    command, debug = commands.parse(argv)
    keep_freed_memory()
    from .signals import Terminated, exit_on_signals

    try:
        with exit_on_signals():  # SIGTERM/SIGINT unwind the job: no partial output, no temporary file
            HANDLERS[type(command)](command)
    except Terminated as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    except EXPECTED as e:
        debug = debug or os.environ.get("SPARSENETS_DEBUG", "") not in ("", "0")
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
