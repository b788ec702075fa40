# Two entry points for a fresh machine with only Python 3.11: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo deploy-demo test lint install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	# CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e '.[dev,ray]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf runs/demo
	$(BIN)/fedmap-secure simulate --dataset heart --method fedmap --transport grpc --out runs/demo

# A CA, a server and 3 site processes on localhost from CSV files (examples/deploy/):
# a private, secure deployment end to end; run it again and the sites continue their ledgers.
deploy-demo: $(STAMP)
	$(BIN)/python examples/deploy/deploy_demo.py --out runs/deploy-demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -n 2 -q

clean:
	rm -rf $(VENV) runs .mypy_cache .pytest_cache .ruff_cache
