# The two commands (README): `make sweep` runs the delta x eps sweep on the embedded digits data with a
# local Ray, `make test` runs the tests (tests/test_docs.py builds the docs too). `make test-fast` runs the unit
# layer only (every test but those marked slow), `make run` trains one model, `make docs` builds the docs site
# into site/, `make help` lists the targets.
# Each builds .venv with pip first (once; again when pyproject.toml or constraints.txt changes), at the versions
# of constraints.txt: the lock the cluster image (Dockerfile) installs too.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# test processes (pytest-xdist): much of a test's time is Ray, MLflow or a subprocess starting up, which a second
# process overlaps with another test's work; worksteal rebalances the minute-long tests. TEST_WORKERS=0: one process
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist worksteal)

.PHONY: sweep run test test-fast bench docs help clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,docs]'
	touch $(STAMP)

sweep: $(STAMP)
	$(BIN)/python -m latune.sweep delta_eps_grid

run: $(STAMP)
	$(BIN)/python -m latune.train --data digits --out runs/digits-la

test: $(STAMP)
	$(PYTEST)

# the unit layer: leaves out the tests marked slow (end-to-end runs, simulations, big networks: over ~3 s each)
test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

# `make bench`: bench_train (latune against the public recipe and torchattacks, in fp32 and in bf16 +
# channels_last, each ratio within one setting) and bench_sweep (Ray's cost with MLflow off, MLflow's cost apart).
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_sweep.py

# the docs site (mkdocs.yml, docs/); --strict: a broken link or anchor fails the build
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

help:
	@echo "make sweep      the main job: the delta_eps_grid sweep on digits, local Ray and MLflow (./mlflow.db)"
	@echo "make test       the test suite (the docs build included), 2 processes (TEST_WORKERS=N to change, 0: one)"
	@echo "make test-fast  the unit layer: the tests not marked slow (minutes)"
	@echo "make run        train one model on digits into runs/digits-la"
	@echo "make bench      the training and sweep benchmarks (docs/figures.md)"
	@echo "make docs       build the docs site into site/ (mkdocs build --strict)"
	@echo "make clean      remove .venv and site/; results (runs/, mlflow.db) stay"
	@echo "Each target but help and clean builds .venv first, at the versions of constraints.txt."

# keeps the results: runs/ (sweeps, models) and mlflow.db are yours to delete
clean:
	rm -rf $(VENV) site
