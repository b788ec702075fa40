# Two entry points for a fresh machine with only Python 3.11: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is installed first, explicitly, so that pip does not pick a build for us.
# TORCH_SPEC: the torch requirement (a user with a GPU sets e.g. TORCH_SPEC='torch==2.13.0'
# and TORCH_INDEX=https://download.pytorch.org/whl/cu126).
# TORCH_INDEX: the package index torch comes from; empty = pip's configured index. On a
# machine that reaches PyTorch's index, TORCH_INDEX=https://download.pytorch.org/whl/cpu
# selects the CPU build (plain PyPI serves a CUDA build on Linux x86-64).
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
TORCH_INDEX_ARG := $(if $(strip $(TORCH_INDEX)),--index-url $(TORCH_INDEX),)
RUNTIME_STAMP := $(VENV)/.runtime-installed
STAMP := $(VENV)/.installed

.PHONY: demo deploy-demo test lint install clean

# The runtime only (what `make demo` needs): torch, then the package without extras.
$(RUNTIME_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install $(TORCH_INDEX_ARG) '$(TORCH_SPEC)'
	$(BIN)/python -m pip install -e .
	touch $(RUNTIME_STAMP)

# Tests and lint add the dev tools and Ray (tests/integration/test_sweep_end_to_end.py runs a
# sweep on a local Ray instance).
$(STAMP): $(RUNTIME_STAMP)
	$(BIN)/python -m pip install -e '.[dev,ray]'
	touch $(STAMP)

install: $(STAMP)

demo: $(RUNTIME_STAMP)
	rm -rf runs/demo
	$(BIN)/fedmap-secure simulate --dataset heart --method fedmap --transport grpc --out runs/demo

# A CA, a server and 3 site processes on localhost from CSV files (examples/deploy/):
# a private, secure deployment end to end; run it again and the sites continue their ledgers.
deploy-demo: $(RUNTIME_STAMP)
	$(BIN)/python examples/deploy/deploy_demo.py --out runs/deploy-demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -n 2 -q

clean:
	rm -rf $(VENV) runs .mypy_cache .pytest_cache .ruff_cache
