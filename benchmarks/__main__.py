"""`python -m benchmarks [--quick]`: every benchmark; a table in the log, the figures in results/bench/bench.json."""
from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from sparsenets.cli import keep_freed_memory
from sparsenets.io import write_json

from . import REPO, Target, alternate, config, isolated
from .durable import fsync_cost
from .end_to_end import estimate, nominal, preset_jobs, quick_preset_estimate, slots, tiny_preset
from .masks import DENSITIES, METHODS, MODELS, mask_seconds
from .overhead import job_overhead
from .stacked import stacking_gain
from .train_step import BATCH, compare, evaluation, mask_hook_seconds, mask_overhead, ours, sensitivity_fraction

STEPS = {"resnet20": 5, "convnet": 10}  # batches per measured round: a few seconds on one CPU thread
DYNAMIC_STEPS = 40  # RigL rewires every 20 steps up to 75 % of the run: 40 steps see one rewiring


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    info = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in info.read_text().splitlines()
             if line.startswith("model name")] if info.exists() else []
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()  # what bf16 autocast gains rests on it
    return f"{names[0] if names else platform.processor() or platform.machine()}, {os.cpu_count()} cores" + (
        ", AMX" if amx else "")


@contextmanager
def threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def median_of(make: Callable[[], Callable[[], float]], n_threads: int, rounds: int, warmup: int = 1) -> float:
    with isolated({"only": make}, n_threads) as side:
        return statistics.median(alternate(side, rounds, warmup)["only"])


def run(device: torch.device, quick: bool, out: Path) -> dict[str, Any]:
    cores, per_job = os.cpu_count() or 1, config()["threads_per_job"]
    rounds = 7
    cpu = device.type == "cpu"
    res: dict[str, Any] = {"device": device.type, "machine": machine(device), "torch": torch.__version__,
                           "date": time.strftime("%Y-%m-%d %H:%M"), "threads_per_job": per_job, "quick": quick}
    t0 = time.perf_counter()

    def log(next_stage: str) -> None:
        """Save what is measured so far (a late failure loses nothing), then say what comes next."""
        write_json(out, res)
        print(f"[{time.perf_counter() - t0:6.0f} s] {next_stage}", flush=True)

    log("every preset's jobs, expanded and priced at nominal rates")
    res.update(price_presets())
    if quick:  # a smoke test of the benchmarks (make test): the measurements below take minutes
        res["expand_paper_s"] = res["expand_s"]["paper"]
        return judged(res)
    keep_freed_memory()  # the mask builders run in this process, as in a job
    log("training step: ours vs the torchvision reference")
    res["train_step"] = {m: compare(m, device, threads=per_job, rounds=rounds, steps=s, bf16=cpu and m == "resnet20")
                         for m, s in STEPS.items()}
    res["train_step_speedup"] = res["train_step"]["resnet20"]["speedup"]
    log("mask overhead")  # a few per cent is within the noise of a round: more rounds
    res["mask_overhead_by_model"] = {m: mask_overhead(m, device, threads=per_job, rounds=2 * rounds + 1, steps=s)
                                     for m, s in STEPS.items()}
    res["mask_overhead"] = res["mask_overhead_by_model"]["resnet20"]
    with threads(per_job):
        res["mask_work_share_by_model"] = {  # the mask's own work per step, over the step's time
            m: mask_hook_seconds(m, device) * res["train_step"][m]["ours_images_per_s"] / BATCH for m in STEPS}
    log("durable writes: a checkpoint with and without fsync")
    r20 = res["train_step"]["resnet20"]
    quick_ips = r20["ours_images_per_s"] * r20.get("bf16_speedup", 1.0)  # the quick recipe trains in bf16 on CPUs
    res["durable_writes"] = fsync_cost(device, config()["recipes"]["quick"]["train_subset"] / quick_ips, rounds)
    log("two conv nets stacked in one step vs one after the other")
    res["stacking"] = stacking_gain(2, device, threads=per_job, rounds=rounds, steps=STEPS["convnet"])
    log("per-job start-up")
    res.update(job_overhead(rounds))
    log("expand: the paper preset's jobs, as every Snakemake parse computes them")
    res["expand_paper_s"] = expand_seconds("paper", rounds)
    with threads(cores):  # mask jobs run at torch's default thread count
        log("mask builders")
        res["mask_seconds"] = mask_seconds(METHODS, MODELS, DENSITIES, device)
    log("the tiny preset through snakemake")
    res.update(tiny_preset(cores))
    log("the quick preset: estimate")
    res["quick_preset"] = _quick_estimate(res, device, rounds, per_job, cores)
    return judged(res)


def judged(res: dict[str, Any]) -> dict[str, Any]:
    """The results with each target's verdict."""
    res["targets"] = {t.key: {"value": t.value, "limit": t.limit, "met": t.met, "verdict": t.verdict()}
                      for t in targets(res)}
    return res


def _quick_estimate(res: dict[str, Any], device: torch.device, rounds: int, per_job: int, cores: int) -> dict:
    measured: dict[str, dict[str, float]] = {"train_images_per_s": {}, "eval_images_per_s": {}, "mask_s": {},
                                             "sensitivity_s_per_fraction": {}}

    def train_ips(model: str, topology: str, options: dict) -> float:
        if topology == "static" and model in res["train_step"]:
            ips = res["train_step"][model]["ours_images_per_s"]
        else:
            make = functools.partial(ours, model, device, DYNAMIC_STEPS, topology=topology, topology_options=options)
            ips = median_of(make, per_job, rounds)
        measured["train_images_per_s"][f"{model}/{topology}"] = ips
        return ips

    def eval_ips(model: str) -> float:
        ips = median_of(functools.partial(evaluation, model, device, 2 * STEPS.get(model, 5)), per_job, rounds)
        measured["eval_images_per_s"][model] = ips
        return ips

    def mask_s(model: str, method: str, density: float) -> float:
        with threads(cores):
            seconds = mask_seconds([method], [model], [density], device)[method][model][density]
        measured["mask_s"][f"{model}/{method}"] = seconds
        return seconds

    def fraction_s(model: str) -> float:  # half a minute a round: two, no warm-up
        seconds = median_of(functools.partial(sensitivity_fraction, model, device), per_job, 2, warmup=0)
        measured["sensitivity_s_per_fraction"][model] = seconds
        return seconds

    return {**quick_preset_estimate(train_ips, eval_ips, mask_s, fraction_s, job_s=res["job_total_s"]), **measured}


def price_presets() -> dict[str, Any]:
    """Every preset's jobs, expanded (timed once) and priced at nominal rates: a kind of job the pricing does not
    know fails here, naming it (end_to_end.work)."""
    expand_s, priced = {}, {}
    for preset in config()["presets"]:
        t0 = time.perf_counter()
        jobs = preset_jobs(preset)
        expand_s[preset] = time.perf_counter() - t0
        priced[preset] = estimate(jobs, nominal(jobs), slots())
    return {"expand_s": expand_s, "priced": priced}


def expand_seconds(preset: str, rounds: int) -> float:
    """Median seconds of `study.expand` for a preset: every Snakemake parse (and each SLURM job's) pays it."""
    from sparsenets.study import expand

    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        expand(config(), preset)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def targets(res: dict[str, Any]) -> list[Target]:
    out = [Target("expand_paper", res["expand_paper_s"], 2, at_least=False, unit=" s")]
    if "train_step" in res:
        out += [Target("train_step_speedup", res["train_step_speedup"], 1.3, at_least=True),
                Target("mask_overhead", res["mask_overhead"], 1.05, at_least=False),
                Target("job_overhead_ratio", res["job_overhead_ratio"], 1.5, at_least=False),
                Target("fsync_share_of_quick_epoch", res["durable_writes"]["fsync_share_of_epoch"], 0.01,
                       at_least=False, unit="")]
    if "mask_seconds" in res:
        worst = max((s, f"{method}/{model}@{d:g}") for method, by_model in res["mask_seconds"].items()
                    for model, by_d in by_model.items() for d, s in by_d.items())
        out.append(Target(f"slowest mask ({worst[1]})", worst[0], 60, at_least=False, unit=" s"))
        phew = res["mask_seconds"].get("phew", {}).get("vgg19", {}).get(0.018)
        if phew is not None:
            out.append(Target("phew/vgg19@0.018", phew, 10, at_least=False, unit=" s"))
    if "quick_preset" in res:
        out.append(Target("quick_preset_minutes", res["quick_preset"]["estimate_s"] / 60, 45, at_least=False,
                          unit=" min"))
    return out


def table(res: dict[str, Any]) -> str:
    lines = [f"device {res['device']} ({res['machine']}), torch {res['torch']}, {res['date']}, "
             f"{res['threads_per_job']} torch thread(s) per training job", ""]
    lines += [f"{preset}: {p['jobs']} jobs expanded in {res['expand_s'][preset]:.2f} s, every kind priced ("
              + ", ".join(f"{k} {n}" for k, n in p["job_counts"].items()) + ")" for preset, p in res["priced"].items()]
    if "train_step" in res:
        lines += ["", *_measured(res)]
    lines += ["", "targets:"] + [f"  {k:<36}{v['verdict']}" for k, v in res["targets"].items()]
    return "\n".join(lines)


def _measured(res: dict[str, Any]) -> list[str]:
    """The measurements of a full run (no --quick), as lines of the table."""
    lines = [f"{'training step, images/s':<26}{'ours':>8}{'reference':>11}{'speed-up':>10}{'ours bf16':>11}"]
    for model, r in res["train_step"].items():
        bf16 = f"{r['bf16_speedup']:.2f}×" if "bf16_speedup" in r else ""
        lines.append(f"  {model:<24}{r['ours_images_per_s']:>8.0f}{r['reference_images_per_s']:>11.0f}"
                     f"{r['speedup']:>9.2f}×{bf16:>11}")
    lines.append(f"  (reference: {res['train_step']['resnet20']['reference_workers']} DataLoader worker(s))")
    lines.append("mask overhead: " + ", ".join(f"{m} {v:.3f}×" for m, v in res["mask_overhead_by_model"].items())
                 + "; the mask's own work, timed alone: " + ", ".join(
                     f"{m} {100 * v:.2f} % of a step" for m, v in res["mask_work_share_by_model"].items()))
    dw = res["durable_writes"]
    lines.append(f"durable checkpoint ({dw['checkpoint_bytes'] / 1e6:.1f} MB): {dw['checkpoint_s'] * 1e3:.0f} ms with "
                 f"fsync, {dw['checkpoint_no_fsync_s'] * 1e3:.0f} ms without: {100 * dw['fsync_share_of_epoch']:.2f} % "
                 f"of a quick-preset epoch ({dw['epoch_s']:.0f} s)")
    st = res["stacking"]
    lines.append(f"{st['nets']} conv nets stacked (torch.func) vs one after the other: {st['gain']:.2f}× "
                 f"({st['stacked_images_per_s']:.0f} vs {st['one_after_another_images_per_s']:.0f} images/s)")
    lines.append(f"job start-up: first step after {res['job_first_step_s']:.1f} s (whole job {res['job_total_s']:.1f} s)"
                 f", bare `import torch` {res['import_torch_s']:.1f} s: {res['job_overhead_ratio']:.2f}×")
    lines.append("  imports: " + ", ".join(f"{k} {v:.1f} s" for k, v in res["job_import_s"].items()))
    if "mask_seconds" in res:
        lines += ["", "mask builders, seconds:"]
        cols = [(m, d) for m, by_d in next(iter(res["mask_seconds"].values())).items() for d in by_d]
        lines.append(f"  {'method':<12}" + "".join(f"{f'{m}@{d:g}':>16}" for m, d in cols))
        for method, by_model in res["mask_seconds"].items():
            lines.append(f"  {method:<12}" + "".join(f"{by_model[m][d]:>16.1f}" for m, d in cols))
    if "tiny_wall_s" in res:
        lines.append(f"\ntiny preset through snakemake: {res['tiny_wall_s']:.0f} s wall, {res['tiny_runs']} runs, "
                     f"training {res['tiny_training_s']:.0f} s ({100 * res['tiny_training_share']:.0f} % of wall)")
    if "quick_preset" in res:
        q = res["quick_preset"]
        lines.append(f"quick preset (estimate): {q['estimate_s'] / 60:.0f} min for {q['jobs']} jobs, {q['slots']} at a "
                     "time; core-seconds " + ", ".join(f"{k} {v:.0f}" for k, v in q["core_seconds_by_command"].items()))
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="a smoke test in seconds: expand every preset and price each of its jobs at nominal rates, "
                        "measure nothing else")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=REPO / "results" / "bench" / "bench.json")
    args = p.parse_args(argv)
    res = run(torch.device(args.device), args.quick, args.out)
    write_json(args.out, res)
    print(table(res))
    print(f"\n-> {args.out}")


if __name__ == "__main__":
    main()
