# `make run` and `make test` create .venv on first use; nothing is installed by hand.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PRESET ?= quick
CORES  ?= all

.PHONY: run test test-fast bench dry-run clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)  ## run the whole pipeline on the default preset
	$(BIN)/snakemake --cores $(CORES) --rerun-incomplete --config preset=$(PRESET)

dry-run: $(STAMP)
	$(BIN)/snakemake -n --config preset=$(PRESET)

test: $(STAMP)  ## every test, the real snakemake/mlflow/slurm ones included
	$(BIN)/python -m pytest

test-fast: $(STAMP)  ## unit tests only: no snakemake, no pipeline, no cluster (under a minute)
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not e2e and not snakemake and not slurm and not tracking_server"

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean-venv:
	rm -rf $(VENV)
