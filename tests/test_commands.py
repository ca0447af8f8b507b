"""The command contracts (sparsenets.commands): each job's command line parses back to the contract it came from,
every kind of job has a command and every command a handler, the rules all run the same short shell line, and
nothing of it needs torch or a subprocess at Snakemake's parse time."""
from __future__ import annotations

import re
import shlex
import subprocess

import pytest
import yaml

from conftest import PY, REPO
from sparsenets import commands, study


def _jobs(preset: str) -> list[study.Job]:
    return study.expand(yaml.safe_load((REPO / "config.yaml").read_text()), preset)


@pytest.mark.parametrize("preset", ["tiny", "quick"])
def test_every_jobs_command_line_parses_back_to_its_contract(preset):
    kinds = set()
    for job in _jobs(preset):
        command = commands.for_job(job, threads=2)
        parsed, debug = commands.parse(shlex.split(command.to_argv()))
        assert parsed == command and not debug, job.name
        kinds.add(job.kind)
    assert preset != "tiny" or kinds == set(study.KINDS)  # the tiny preset has every kind of job


def test_every_kind_of_job_has_a_command_and_every_command_a_handler():
    from sparsenets.cli import HANDLERS

    assert set(study.KINDS) <= set(commands._BUILDERS)
    assert set(HANDLERS) == set(commands.COMMANDS.values())
    job = study.Job("rewire", "x", {}, {"out": "x"}, "x.log")
    with pytest.raises(ValueError, match="job kind 'rewire' .*sparsenets.commands._BUILDERS"):
        commands.for_job(job)


def test_a_field_spells_itself_by_its_type():
    table = commands.Table(files=("a b.json", "c.json"), kind="layers", out="t.csv")
    assert table.to_argv() == "table 'a b.json' c.json --kind layers --out t.csv"  # positionals first, quoted
    assert commands.Table(files=("a",), out="t.csv").words() == ["table", "a", "--out", "t.csv"]  # defaults left out
    figure = commands.Figure(figure="reinit", tables=("r.csv",), out=("f.png", "f.pdf"), options={"density": 0.1})
    assert figure.words()[-2:] == ["--options", '{"density": 0.1}']
    assert commands.Structure(mask="m.pt", json=True).words() == ["structure", "m.pt", "--json"]
    assert commands.parse(["structure", "m.pt"])[0] == commands.Structure(mask="m.pt")


def test_a_json_argument_must_be_one_object(capsys):
    with pytest.raises(SystemExit):
        commands.parse(["figure", "reinit", "--tables", "r.csv", "--out", "f.png", "--options", "[1]"])
    assert "not a JSON object" in capsys.readouterr().err


def test_the_run_itself_is_spelled_as_study_spells_it():
    assert commands.Train.__dataclass_fields__["variant"].default == study.VARIANTS[0]


def test_every_rule_runs_the_same_short_shell_line():
    rules = "\n".join(p.read_text() for p in sorted((REPO / "workflow" / "rules").glob("*.smk")))
    shells = re.findall(r"^    shell:\n\s+(.*)$", rules, flags=re.M)
    assert len(shells) == len(re.findall(r"^rule \w+:", rules, flags=re.M)) > 10
    assert set(shells) == {'"{PY} -m sparsenets {params.argv} > {log} 2>&1"'}


def test_nothing_in_the_workflow_or_the_contracts_starts_a_subprocess_or_imports_torch():
    for path in [REPO / "Snakefile", *(REPO / "workflow").rglob("*.smk")]:
        assert "subprocess" not in path.read_text(), path
    code = "import sys, sparsenets.commands, sparsenets.study; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([PY, "-c", code], check=True, cwd=REPO)
