# The README's commands. `make pipeline` and `make test` each create the environment first.
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
UV_VERSION := 0.13.9
export PATH := $(BIN):$(PATH)
export UV_PYTHON_DOWNLOADS := never

# GPU=1 also installs the `gpu` extra (JAX with CUDA 12, Linux; docs/installation.md), e.g.
# `make pipeline GPU=1`. The environment remembers it (.venv/.synced-gpu), so a later plain
# `make test` keeps the GPU packages; GPU=0 goes back to the CPU-only default.
ifeq ($(GPU),1)
FLAVOUR := gpu
else ifeq ($(GPU),0)
FLAVOUR := cpu
else
FLAVOUR := $(if $(wildcard $(VENV)/.synced-gpu),gpu,cpu)
endif
SYNCED := $(VENV)/.synced-$(FLAVOUR)

.PHONY: setup pipeline test test-all lint docs params benchmark team-server team-server-stop

# The environment, rebuilt whenever pyproject.toml or uv.lock changes. Bytecode is compiled at
# install time: where PYTHONDONTWRITEBYTECODE is set, each TensorFlow import would otherwise
# recompile it (docs/benchmarks.md).
# An unsupported $(PYTHON) (see pyproject's requires-python) is refused in one line first.
$(SYNCED): pyproject.toml uv.lock
	@test -x $(BIN)/uv || command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found: install CPython 3.11.4 to 3.13, or name one: make PYTHON=python3.12 ..." >&2; exit 1; }
	@test -x $(BIN)/uv || $(PYTHON) tools/check_python.py
	test -x $(BIN)/uv || { $(PYTHON) -m venv $(VENV) && $(BIN)/pip install --quiet uv==$(UV_VERSION); }
	$(BIN)/uv sync --frozen --compile-bytecode --python $(BIN)/python $(if $(filter gpu,$(FLAVOUR)),--extra gpu)
	rm -f $(VENV)/.synced $(VENV)/.synced-*
	touch $@

# The page of `dvc plots show` and `dvc plots diff` with its chart scripts inlined, so that its
# charts draw without internet; scripts/plots_page.py also names it in .dvc/config.local.
PLOTS_PAGE := .dvc/plots_page.html
$(PLOTS_PAGE): $(SYNCED) scripts/plots_page.html scripts/plots_page.py
	python scripts/plots_page.py

setup: $(SYNCED) $(PLOTS_PAGE)

pipeline: setup  ## Run the whole pipeline on the default config (digits, offline).
	dvc repro

# The test modules run in parallel, one process per CPU core (pytest-xdist), each module
# whole in one process: its fixtures (a trained pipeline, a server) are built once.
# --durations lists the slowest tests at the end: what to mark `slow` when `make test` grows.
PYTEST_PARALLEL := -n auto --dist loadfile --durations=15

test: setup lint  ## Fast and end-to-end tests (skips the minutes-long `slow` ones).
	pytest -m "not slow" $(PYTEST_PARALLEL)

test-all: setup lint  ## Everything, including real-MNIST training.
	pytest $(PYTEST_PARALLEL)

# The documentation site (mkdocs.yml, docs/): --strict fails on a broken link or anchor. It
# builds offline (no fonts or plugins fetched) into the git-ignored site/.
# NO_MKDOCS_2_WARNING silences mkdocs-material's notice about its own end of life.
MKDOCS := NO_MKDOCS_2_WARNING=1 mkdocs
DOCS_ADDRESS ?= 127.0.0.1:8000

lint: setup
	ruff check .
	ruff format --check .
	mypy
	$(MKDOCS) build --strict --quiet

docs: setup  ## Serve the documentation site on http://$(DOCS_ADDRESS), rebuilt on every save.
	$(MKDOCS) serve --dev-addr $(DOCS_ADDRESS)

params: setup  ## Recompose params.yaml from conf/ (after editing conf/).
	cnn-pipeline params

TEAM_DATA ?= .team-server
TEAM_PORT ?= 5000

team-server: setup  ## A trial team MLflow server: PostgreSQL + S3 stand-in + mlflow server (AUTH=1: basic auth).
	python scripts/team_server.py start --data $(TEAM_DATA) --port $(TEAM_PORT) $(if $(AUTH),--auth)

team-server-stop:  ## Stop the trial team server (its data stays in $(TEAM_DATA)).
	$(BIN)/python scripts/team_server.py stop --data $(TEAM_DATA)
