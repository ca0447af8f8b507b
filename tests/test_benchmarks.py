"""The benchmarks cannot rot: `python -m benchmarks --quick` (a smoke test in seconds) expands every preset and
prices each of its jobs by the command it runs, so a new kind of job without a price fails `make test`, naming it.
What is fast enough is the benchmarks' business (`make bench`: targets), never a timed assertion here."""
from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from conftest import PY, REPO
from sparsenets import commands, study


@pytest.mark.bench
def test_the_quick_benchmarks_price_every_job_of_every_preset(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([PY, "-m", "benchmarks", "--quick", "--out", str(out)], cwd=REPO, capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    presets = yaml.safe_load((REPO / "config.yaml").read_text())["presets"]
    assert set(res["priced"]) == set(presets)
    kinds = set()
    for preset, priced in res["priced"].items():
        assert sum(priced["job_counts"].values()) == priced["jobs"] > 0 and priced["estimate_s"] > 0, preset
        kinds |= set(priced["job_counts"])
    assert kinds == set(study.KINDS)
    assert "expand_paper" in res["targets"] and "every kind priced" in proc.stdout


def test_a_job_whose_command_has_no_price_fails_naming_its_kind():
    from benchmarks.end_to_end import Rates, work

    job = study.Job("names", "", {}, {"out": "names.json"}, "names.log")
    with pytest.raises(ValueError, match="job kind 'names' \\(command 'names'\\) has no price"):
        work(job, commands.Names(), Rates({}, {}, {}, {}, 1.0))
