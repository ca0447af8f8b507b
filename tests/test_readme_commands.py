"""Every command in the README's bash blocks runs as written, where this machine can run it: Snakemake commands
as dry runs (`-n`, the preset's whole DAG planned), the CLI's own commands for real, and each command this
test cannot run is listed with the test that covers it or the reason, so a new README command must be placed."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from conftest import PY, REPO, snakemake

README = REPO / "README.md"
# Commands not run here, by their start: why (or which test runs them).
NOT_HERE = {
    "make ": "make rebuilds the shared venv (Makefile; `make test` is the lead's)",
    "source .venv/bin/activate": "shell state, nothing to run",
    ".venv/bin/mlflow ui": "started as written by tests/test_mlflow_portable.py (server fixture)",
    "nvidia-smi": "needs an NVIDIA driver",
    "python -m sparsenets plan --preset paper --calibrate": "needs a finished run's results (tests/test_plan.py)",
    ".venv/bin/python -m sparsenets plan --preset paper": "minutes of CPU measurement (tests/test_plan.py prices)",
    ".venv/bin/python -m sparsenets structure results/": "needs the quick preset's masks (tests/test_readers_kinds.py)",
    "export ": "sets the shell's environment for the commands after it",
    "MLFLOW_HOST=0.0.0.0 MLFLOW_PORT=5000 scripts/start_tracking_server.sh": "tests/test_scale_out.py starts it",
    "snakemake --profile workflow/profiles/slurm": "needs SLURM's sbatch: tests/test_scale_out.py (a real cluster)",
    "snakemake -n --quiet rules --configfile my-presets.yaml": "tests/test_docs.py (writes my-presets.yaml first)",
    "snakemake --cores all --configfile my-presets.yaml": "tests/test_docs.py (writes my-presets.yaml first)",
}


def readme_commands() -> list[str]:
    """Each command line of the README's bash blocks, its comment cut off."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_every_readme_command_is_run_here_or_placed():
    commands = readme_commands()
    assert len(commands) >= 15
    placed = [c for c in commands if c.startswith(("snakemake", ".venv/bin/python")) or
              any(c.startswith(k) for k in NOT_HERE)]
    assert placed == commands, f"README commands no test runs: {sorted(set(commands) - set(placed))}"


@pytest.mark.snakemake
@pytest.mark.parametrize("command", [c for c in readme_commands() if c.startswith("snakemake")
                                     and not any(c.startswith(k) for k in NOT_HERE)])
def test_readme_snakemake_command_plans_as_a_dry_run(command, tmp_path):
    """From a folder like the repository root (config.yaml beside it), the command as written plus `-n`. The
    paper preset's 8,000-job DAG takes minutes per dry run: its flags are checked here on one study of it (the
    whole paper DAG is dry-run once, by test_study's job counts)."""
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    args = command.split()[1:]
    if "preset=paper" in args and not any(a.startswith("only_studies=") for a in args):
        args.insert(args.index("preset=paper") + 1, "only_studies=deconstructing")
    proc = snakemake(tmp_path, *(["-n", "--quiet", "rules"] if "-n" not in args else []), *args, configfile=False)
    assert re.search(r"^total\s+\d+$", proc.stdout, flags=re.M), proc.stdout[-2000:]


@pytest.mark.parametrize("command", [c for c in readme_commands() if c.startswith(".venv/bin/python")
                                     and not any(c.startswith(k) for k in NOT_HERE)])
def test_readme_python_command_runs(command):
    args = command.split()[1:]
    if args[:1] == ["-c"]:
        args = ["-c", command.split("-c", 1)[1].strip().strip('"')]
    proc = subprocess.run([PY, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr[-2000:]
