# `make run` and `make test` create .venv on first use; nothing is installed by hand.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PRESET ?= quick
CORES  ?= all
# pytest workers for `make test`; the tests that share the tiny pipeline run together on one of them
WORKERS ?= 2

.PHONY: run test test-fast bench dry-run clean-venv gpu-check

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)  ## run the whole pipeline on the default preset
	$(BIN)/snakemake --cores $(CORES) --rerun-incomplete --show-failed-logs --logger sparsenets --config preset=$(PRESET)

dry-run: $(STAMP)
	$(BIN)/snakemake -n --config preset=$(PRESET)

test: $(STAMP)  ## every test, the real snakemake/mlflow/slurm ones included
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup

test-fast: $(STAMP)  ## unit tests only: no snakemake, no pipeline, no cluster, no benchmarks (about 2 minutes on 2 cores)
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not e2e and not snakemake and not slurm and not tracking_server and not bench"

gpu-check: $(STAMP)  ## runs per GPU that pay off, measured here (skips without CUDA); SLICE=1 also trains 3 paper runs
	$(BIN)/python -m sparsenets.gpu_check $(if $(SLICE),--slice --data data/cifar10.npz)

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean-venv:
	rm -rf $(VENV)
