# The two commands (README): `make sweep` runs the delta x eps sweep on the embedded digits data with a
# local Ray, `make test` runs the tests. `make run` trains one model.
# Each builds .venv with pip first (once; again when pyproject.toml or constraints.txt changes), at the versions
# of constraints.txt: the lock the cluster image (Dockerfile) installs too.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: sweep run test bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

sweep: $(STAMP)
	$(BIN)/python -m latune.sweep delta_eps_grid

run: $(STAMP)
	$(BIN)/python -m latune.train --data digits --out runs/digits-la

test: $(STAMP)
	$(BIN)/python -m pytest -q

# `make bench`: bench_train (latune against the public recipe and torchattacks, in fp32 and in bf16 +
# channels_last, each ratio within one setting) and bench_sweep (Ray's cost with MLflow off, MLflow's cost apart).
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_sweep.py

clean:
	rm -rf $(VENV) runs
