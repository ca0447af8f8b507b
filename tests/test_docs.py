"""The docs travel with the code: docs/METHODS.md covers every registered method, [choice] key, figure and
claim; docs/CLI.md is the command contracts' own reference; nothing shipped points outside the repository; the README's
subset commands work (a real Snakemake dry run)."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import REPO, snakemake

METHODS_MD = REPO / "docs" / "METHODS.md"
README = REPO / "README.md"
SKIP_DIRS = {".git", ".venv", "results", "data", ".snakemake", "__pycache__", ".pytest_cache", "build", "dist"}


def _methods_doc() -> str:
    return METHODS_MD.read_text()


def _section(text: str, heading: str) -> str:
    """The text under a markdown heading, up to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    start = text.index(heading + "\n")
    rest = text[start + len(heading) + 1:]
    end = re.search(rf"^#{{1,{len(level)}}} ", rest, flags=re.M)
    return rest[: end.start()] if end else rest


def _ticked(text: str) -> set[str]:
    """Every `code span` of a markdown text."""
    return set(re.findall(r"`([^`\n]+)`", text))


# ------------------------------------------------------------------------------------------ METHODS.md
def test_every_registered_method_is_described():
    """A method someone registers without describing it fails here, naming it."""
    from sparsenets import pruning, study, topology

    pruning.load_all()
    names = set(pruning.METHODS) | set(topology.methods()) | {"imp", study.MAG}
    names |= {"random-like-M", "dnw-freezeK"}  # the composed ones, spelled as a study lists them
    described = _ticked(_section(_methods_doc(), "## Methods"))
    missing = sorted(n for n in names if n not in described)
    assert not missing, f"docs/METHODS.md, section Methods, does not describe: {', '.join(missing)}"


def _choice_keys(config_text: str) -> list[str]:
    """The keys config.yaml marks [choice]: the key on the marked line, or, for a marked comment, the key of
    the next line that has one. A line that explains the marker ("... are marked [choice]") marks nothing."""
    lines = config_text.splitlines()
    keys = []
    for i, line in enumerate(lines):
        if ("[choice]" not in line and "[choice:" not in line) or "marked [choice]" in line:
            continue
        for candidate in lines[i:]:
            m = re.match(r"\s*([A-Za-z_][\w-]*):", candidate)
            if m:
                keys.append(m.group(1))
                break
    return keys


def test_the_choice_finder_reads_marked_lines_and_marked_comments():
    text = "# keys marked [choice] (docs)\nz: 0\na: 1  # [choice] x\n# [choice] two lines\n  # [choice: 0] on b\n  b: {c: 1}\n"
    assert _choice_keys(text) == ["a", "b", "b"]


def test_every_choice_key_and_claim_option_is_described():
    """Each key config.yaml marks [choice], and each claim option, is a `key` (or `key.sub`, `parent.key`) in
    the Choices section."""
    from dataclasses import fields

    from sparsenets.claims import ClaimOptions

    keys = set(_choice_keys((REPO / "config.yaml").read_text())) | {f.name for f in fields(ClaimOptions)}
    assert {"dynamic_init", "imp", "models", "claim_density_max"} <= keys  # the finder found the markers
    ticked = _ticked(_section(_methods_doc(), "## Choices"))
    described = {part for t in ticked for part in re.split(r"[.\s(),]+", t) if part}
    missing = sorted(k for k in keys if k not in described)
    assert not missing, f"docs/METHODS.md, section Choices, does not describe the config key(s): {', '.join(missing)}"


def test_every_figure_table_and_claim_is_described():
    from sparsenets.claims import CLAIMS
    from sparsenets.study import PROTOCOLS

    doc = _methods_doc()
    ticked = _ticked(_section(doc, "## Experiments"))
    for protocol in PROTOCOLS.values():
        missing = [f for f in [*protocol.figures, *protocol.tables] if f not in ticked]
        assert not missing, f"docs/METHODS.md, Experiments, lacks {protocol.name}'s {', '.join(missing)}"
        assert f"protocol: {protocol.name}" in ticked
    claims = _section(doc, "## Claim tests")
    missing = [cid for cid in CLAIMS if f"**{cid}**" not in claims]
    assert not missing, f"docs/METHODS.md, Claim tests, lacks {', '.join(missing)}"


def test_readme_and_claims_md_point_at_the_methods_doc(tmp_path):
    from sparsenets import claims

    assert "docs/METHODS.md" in README.read_text()
    claims.write([], tmp_path / "claims.md", tmp_path / "claims.csv", preset="tiny")
    assert f"`{claims.METHODS_DOC}`" in (tmp_path / "claims.md").read_text()
    assert (REPO / claims.METHODS_DOC).is_file()


def _shipped_files() -> list[Path]:
    out = []
    for path in REPO.rglob("*"):
        rel = path.relative_to(REPO)
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in rel.parts) or not path.is_file():
            continue
        if path.stat().st_size < 2_000_000:
            out.append(path)
    return out


def test_nothing_shipped_points_at_the_shared_notes():
    """The notes beside the repository are no part of it: no file may link to or need them."""
    banned = ["../" + "shared", "PAPERS" + ".md", "DESIGN" + ".md"]  # spelled apart: this file is shipped too
    hits, files = [], _shipped_files()
    assert {REPO / "README.md", REPO / "src/sparsenets/cli.py", REPO / "config.yaml"} <= set(files)
    for path in files:
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        hits += [f"{path.relative_to(REPO)}: {b}" for b in banned if b in text]
    assert not hits, "shipped files point outside the repository:\n" + "\n".join(hits)


# --------------------------------------------------------------------------------------------- the CLI
def test_every_cli_command_and_option_has_a_help_string():
    from sparsenets.commands import COMMANDS

    bare = [f"{name} {o.flag}" for name, cls in COMMANDS.items() for o in cls.arguments() if not o.help.strip()]
    bare += [f"{name} (the command itself)" for name, cls in COMMANDS.items() if not cls.about()]
    assert not bare, f"give these a help string in src/sparsenets/commands.py: {', '.join(bare)}"


def test_cli_reference_is_current():
    from sparsenets.commands import reference

    assert (REPO / "docs" / "CLI.md").read_text() == reference(), (
        "docs/CLI.md is stale: run .venv/bin/python -m sparsenets.commands > docs/CLI.md")


def test_the_cli_reference_lists_every_option_with_its_help():
    from sparsenets.commands import COMMANDS

    text = (REPO / "docs" / "CLI.md").read_text()
    for name, cls in COMMANDS.items():
        section = _section(text, f"## {name}")
        for o in cls.arguments():
            spelled = f"`{o.metavar or o.name}`" if o.positional else f"`{o.flag}"
            assert spelled in section and " ".join(o.help.split()) in section, (name, o.name)


def test_readme_lists_every_command():
    from sparsenets.commands import COMMANDS

    section = _section(README.read_text(), "## Command line")
    missing = [name for name in COMMANDS if f"`{name}`" not in section]
    assert not missing, f"README, Command line, lacks: {', '.join(missing)}"


# ------------------------------------------------------------------------------------ running a subset
def _config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_only_studies_keeps_the_named_studies_of_the_preset():
    from sparsenets import study

    config = _config()
    every = study.expand(config)
    for value in (["phew"], "phew", " phew ,"):
        jobs = study.expand({**config, "only_studies": value})
        assert {j.study for j in jobs} == {"", "phew"}
        assert {j.output for j in jobs if j.study == "phew"} == {j.output for j in every if j.study == "phew"}
    assert [s.name for s in study.studies({**config, "only_studies": "deconstructing,phew"})] == ["phew",
                                                                                                  "deconstructing"]
    assert len(study.expand({**config, "only_studies": []})) == len(every)


def test_only_studies_naming_no_study_of_the_preset_fails_naming_key_value_and_choices():
    from sparsenets import study

    with pytest.raises(ValueError, match=r"only_studies.*'phw'.*phew, deconstructing"):
        study.studies({**_config(), "only_studies": ["phw"]})


def test_the_schema_takes_only_studies_as_a_list_or_a_string_and_nothing_else():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    config = _config()
    for good in (["phew"], "phew,deconstructing"):
        jsonschema.validate({**config, "only_studies": good}, schema)
    for bad in (3, ["Phew"], ["phew", "phew"]):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**config, "only_studies": bad}, schema)


def _readme_subset() -> str:
    return _section(README.read_text(), "### Running a subset, or a preset of your own")


def _rule_counts(stdout: str) -> dict[str, int]:
    """Snakemake's `--quiet rules` table: rule -> jobs."""
    return {m[1]: int(m[2]) for m in re.finditer(r"^([a-z_]+)\s+(\d+)$", stdout, flags=re.M)}


def _as_dry_run(command: str) -> list[str]:
    """A documented `snakemake --cores all ...` command as a dry run that prints job counts per rule."""
    args = command.split("#")[0].split()
    assert args[:3] == ["snakemake", "--cores", "all"], command
    return ["-n", "--quiet", "rules", *args[3:]]


@pytest.mark.snakemake
def test_the_readme_subset_commands_work_as_dry_runs(tmp_path):
    """The README's commands, run from a folder like the repository root (config.yaml beside them): the
    one-study command plans exactly that study's jobs, and the user preset file plans the counts the README
    promises."""
    from sparsenets import study

    section = _readme_subset()
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    one_study = next(line for line in section.splitlines() if "only_studies=phew" in line)
    counts = _rule_counts(snakemake(tmp_path, *_as_dry_run(one_study), configfile=False).stdout)
    expected = {}
    for job in study.expand({**_config(), "only_studies": "phew"}):
        expected[job.kind] = expected.get(job.kind, 0) + 1
    assert {k: v for k, v in counts.items() if k not in ("all", "total")} == expected
    assert "sensitivity" not in counts and "train_reinit" not in counts

    name, body = re.search(r"For example `([\w.-]+)`:\s*```yaml\n(.*?)```", section, flags=re.S).groups()
    (tmp_path / name).write_text(body)
    command = next(line for line in section.splitlines() if line.startswith("snakemake -n") and name in line)
    args = command.split("#")[0].split()[1:]
    args[args.index(name)] = str(tmp_path / name)  # Snakemake reads --configfile from where it starts
    counts = _rule_counts(snakemake(tmp_path, *args, configfile=False).stdout)
    masks, runs = map(int, re.search(r"(\d+) masks, (\d+) training runs", command).groups())
    assert (counts.get("mask"), counts.get("train")) == (masks, runs)


def test_the_readme_names_the_cuda_build_of_the_pinned_torch():
    """The driver advice follows the wheel: a torch upgrade that changes its CUDA or its GPUs fails here."""
    import torch

    if torch.version.cuda is None:
        pytest.skip("a CPU-only torch build: no CUDA to compare")
    text = _section(README.read_text(), "## Running on a GPU workstation")
    pin = re.search(r'"torch==([\d.]+)"', (REPO / "pyproject.toml").read_text())[1]
    assert torch.__version__.split("+")[0] == pin and f"`torch=={pin}`" in text
    assert f"`torch.version.cuda` prints `{torch.version.cuda}`" in text
    archs = torch.cuda.get_arch_list()
    assert f"`{archs[0]}` … `{archs[-1]}`" in text
