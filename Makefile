# The two commands of the README: `make demo` and `make test`. Both work on a fresh machine.
PYTHON ?= python3
# Two environments: the demo's holds only what a user installs (gha-mlops[torch]), the tests'
# adds the dev tools. One shared venv would make every demo run recorded before `make test`
# "environment drift" for `gha-mlops reproduce`.
VENV ?= .venv
DEMO_VENV ?= .venv-demo
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DEMO_PY := $(DEMO_VENV)/bin/python
DEMO_PIP := $(DEMO_PY) -m pip
# A CPU build of torch, pinned here (pyproject.toml keeps a range for users): a looser
# requirement pulls several GB of CUDA packages.
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test install-demo install-test system-deps npm-deps lint typecheck bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(DEMO_PY):
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_PIP) install --quiet --upgrade pip

$(DEMO_VENV)/.demo-installed: pyproject.toml | $(DEMO_PY)
	$(DEMO_PIP) install --quiet "$(TORCH_PIN)"
	$(DEMO_PIP) install --quiet -e ".[torch,package]"
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(PY)
	$(PIP) install --quiet "$(TORCH_PIN)"
	$(PIP) install --quiet -e ".[torch,dev]"
	touch $@

install-demo: $(DEMO_VENV)/.demo-installed
install-test: $(VENV)/.test-installed

## Run the embedded example end to end (writes ./gha-mlops-demo).
demo: install-demo
	$(DEMO_VENV)/bin/gha-mlops demo
	@echo "(gha-mlops is installed in $(DEMO_VENV): run 'source $(DEMO_VENV)/bin/activate' to use the commands above)"

lint: install-test
	$(VENV)/bin/ruff check src tests benchmarks examples

typecheck: install-test
	$(VENV)/bin/mypy

system-deps:
	.ci/system-deps

# GitHub's OpenAPI description and webhook examples, for the GitHub API emulator's validation.
.ci/npm/node_modules/.installed: .ci/npm/package.json .ci/npm/package-lock.json | system-deps
	npm ci --prefix .ci/npm --no-audit --no-fund --loglevel=error
	touch $@

npm-deps: .ci/npm/node_modules/.installed

## Install everything the tests need and run the whole suite.
test: install-test system-deps npm-deps lint typecheck
	$(PY) -m pytest

bench: install-test
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(DEMO_VENV) gha-mlops-demo .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
