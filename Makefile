# Two commands set everything up on a fresh machine (see README.md):
#   make run    create .venv, install Spatiora, start it on the configured model (the demo by default)
#   make test   the same set-up plus the test tools, then the checks (import contracts, ruff lint and
#               format, mypy) and the whole test suite
#
# PyTorch: on a machine with an NVIDIA driver the usual CUDA build is installed; elsewhere the CPU
# build (torch==$(TORCH_CPU_VERSION) from $(TORCH_CPU_INDEX)), so tests never pull a multi-GB CUDA
# build they cannot use. A torch already importable in the venv is kept as it is.

PYTHON ?= python3
VENV ?= .venv
TORCH_CPU_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PYTEST_ARGS ?=
# The suite runs in this many processes (pytest-xdist), a test file's tests together on one of
# them and the tests on the local Ray together on one (--dist loadgroup; tests/conftest.py).
# TEST_WORKERS=0 runs it in this process alone.
TEST_WORKERS ?= 2

LINTED := spatiora_tui tests benchmarks tools
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: run test check setup setup-test clean

run: $(VENV)/.installed
	$(VENV)/bin/spatiora $(ARGS)

test: check
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

check: $(VENV)/.installed-test
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy

setup: $(VENV)/.installed
setup-test: $(VENV)/.installed-test

$(PY):
	$(PYTHON) -c 'import sys; sys.exit("Spatiora needs Python >= 3.10; set PYTHON=python3.x" if sys.version_info < (3, 10) else 0)'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.torch: | $(PY)
	@if $(PY) -c 'import torch' 2>/dev/null; then \
		echo "torch already installed: $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: installing the CUDA build of torch"; \
		$(PIP) install torch; \
	elif $(PY) -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' "$(TORCH_CPU_INDEX)" >/dev/null 2>&1; then \
		echo "no NVIDIA GPU: installing the CPU build torch==$(TORCH_CPU_VERSION) from $(TORCH_CPU_INDEX)"; \
		$(PIP) install --no-deps "torch==$(TORCH_CPU_VERSION)" --extra-index-url "$(TORCH_CPU_INDEX)"; \
		$(PIP) install "torch==$(TORCH_CPU_VERSION)"; \
	else \
		echo "no NVIDIA GPU, $(TORCH_CPU_INDEX) unreachable: installing torch==$(TORCH_CPU_VERSION) from the configured indexes"; \
		$(PIP) install "torch==$(TORCH_CPU_VERSION)"; \
	fi
	@touch $@

$(VENV)/.installed: pyproject.toml spatiora_tui/ui/_sixel.c $(VENV)/.torch
	$(PIP) install --quiet -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PIP) install --quiet -e '.[test,http,serve]'
	@touch $@

clean:
	rm -rf $(VENV) build *.egg-info
