"""The console's progress line (sparsenets.progress, `snakemake --logger sparsenets`): stage, jobs done, time left;
errors in full; the whole log still in .snakemake/log/."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import snakemake
from sparsenets.progress import Progress, duration


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_estimate_prices_each_rule_by_its_finished_jobs_over_the_jobs_run_at_once():
    clock = Clock()
    p = Progress(clock=clock)
    p.plan({"mask": 2, "train": 4, "all": 1, "total": 7})
    assert p.total == 6 and p.seconds_left() is None and "after the first job" in p.line()
    p.started(1, "mask")
    p.started(2, "mask")
    clock.now = 10
    p.finished(1)
    p.finished(2)  # two masks at once, 10 s each: two jobs at a time so far
    assert p.current_stage() == "training"  # none running: the earliest stage with jobs left
    p.started(3, "train")
    p.started(4, "train")
    clock.now = 40
    p.finished(3)  # a training job takes 30 s
    # left: 3 trainings x 30 s, less the 30 s job 4 has run; busy 20 + 30 + 30 = 80 s over 40 s: 2 at once
    assert p.seconds_left() == pytest.approx((3 * 30 - 30) / 2)
    assert p.line() == "training: 3/6 jobs done (50 %), 1 running (train 1); about 30 s left"
    clock.now = 70
    p.finished(4)
    p.started(5, "train")
    p.started(6, "train")
    clock.now = 100
    p.finished(5)
    p.finished(6)
    assert p.line() == "done: 6/6 jobs done (100 %), 0 running; done"


def test_a_rule_without_a_finished_job_is_priced_at_the_mean_of_all_finished_jobs():
    clock = Clock()
    p = Progress(clock=clock)
    p.plan({"mask": 1, "figure": 2})
    p.started(1, "mask")
    clock.now = 6
    p.finished(1)
    assert p.seconds_left() == pytest.approx(12)
    assert p.current_stage() == "figures"


def test_durations_read_as_an_estimate_should():
    assert [duration(s) for s in (4.4, 59, 61, 3599, 3600 + 5 * 60)] == ["4 s", "59 s", "1 min", "60 min", "1 h 05 min"]


MASK = "results/phew/masks/digits/mlp/{method}/d0.05/s0.pt"


@pytest.mark.snakemake
def test_the_console_shows_progress_lines_and_errors_in_full_and_the_file_log_keeps_everything(tmp_path, digits_npz):
    """Two mask jobs of the tiny preset through `--logger sparsenets`: a few progress lines instead of Snakemake's
    blocks; then a damaged dataset fails a job, and its error (rule, log file) reaches the console."""
    (tmp_path / "data").mkdir()
    shutil.copy(digits_npz, tmp_path / "data" / "digits.npz")
    args = ("--cores", "2", "--logger", "sparsenets", "--logger-sparsenets-interval", "0",
            MASK.format(method="random"), MASK.format(method="phew"), "--config", "preset=tiny")
    ok = snakemake(tmp_path, *args, env={"SPARSENETS_TRACKING_URI": ""})
    console = (ok.stdout + ok.stderr).splitlines()
    lines = [line for line in console if "jobs done" in line]
    assert lines and "masks: 0/2 jobs done (0 %), 1 running (mask 1)" in lines[0], console
    assert lines[-1].endswith("done: 2/2 jobs done (100 %), 0 running; done"), console
    assert not any(line.startswith(("rule ", "localrule ", "    output:")) for line in console), console
    assert len(console) < 20, console
    full = next((tmp_path / ".snakemake" / "log").glob("*.snakemake.log")).read_text()
    assert full.count("rule mask:") == 2

    (tmp_path / "data" / "digits.npz").write_bytes(digits_npz.read_bytes()[:5000])
    bad = snakemake(tmp_path, *args[:-4], MASK.format(method="synflow"), "--config", "preset=tiny", check=False,
                    env={"SPARSENETS_TRACKING_URI": ""})
    console = bad.stdout + bad.stderr
    assert bad.returncode != 0
    assert "Error in rule mask" in console and "logs/phew/masks/digits/mlp/synflow/d0.05/s0.log" in console, console
    assert not Path(tmp_path / MASK.format(method="synflow")).exists()


def test_every_kind_of_job_has_its_stage():
    """progress.STAGES names a stage for exactly the job kinds sparsenets.study makes (a new kind must say its
    stage, else the progress line would call it by its rule name)."""
    from sparsenets import progress, study

    assert set(progress.STAGES) == set(study.KINDS)
