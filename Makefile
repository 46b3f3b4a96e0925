# The two commands of the README: `make demo` and `make test`. Both work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# A CPU build of torch, pinned here (pyproject.toml keeps a range for users): a looser
# requirement pulls several GB of CUDA packages.
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test install-demo install-test system-deps npm-deps lint typecheck bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(PY)
	$(PIP) install --quiet "$(TORCH_PIN)"
	$(PIP) install --quiet -e ".[torch]"
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(PY)
	$(PIP) install --quiet "$(TORCH_PIN)"
	$(PIP) install --quiet -e ".[torch,dev]"
	touch $@

install-demo: $(VENV)/.demo-installed
install-test: $(VENV)/.test-installed

## Run the embedded example end to end (writes ./gha-mlops-demo).
demo: install-demo
	$(VENV)/bin/gha-mlops demo
	@echo "(gha-mlops is installed in $(VENV): run 'source $(VENV)/bin/activate' to use the commands above)"

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
	rm -rf $(VENV) gha-mlops-demo .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
