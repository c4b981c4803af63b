# jax-vae: `make train` (main job), `make test` (whole suite). Both create .venv on first use, with the
# exact package set of constraints-cpu.txt (torch: a CPU build unless an NVIDIA GPU is present).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Real datasets for tests and benchmarks: ../shared/datasets beside the checkout when present.
JAX_VAE_DATA_DIR ?= $(abspath ../shared/datasets)
export JAX_VAE_DATA_DIR

.PHONY: install train test test-quick test-parity test-unit lint format parity-report bench bench-tiny clean

install: $(VENV)/.installed

# torch: a CPU build where no NVIDIA GPU is present (TORCH=cpu: torch==2.13.0+cpu from the configured
# package indexes, else from PyTorch's CPU index), PyPI's default build otherwise (TORCH=cuda).
TORCH ?= $(if $(shell command -v nvidia-smi 2>/dev/null),cuda,cpu)
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

$(VENV)/.installed: pyproject.toml constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
ifeq ($(TORCH),cpu)
	$(PY) -m pip install -c constraints-cpu.txt torch \
		|| $(PY) -m pip install -c constraints-cpu.txt --extra-index-url $(TORCH_CPU_INDEX) torch
	$(PY) -m pip install -c constraints-cpu.txt -e ".[torch,dev]"
else
	grep -v '^torch==' constraints-cpu.txt > $(VENV)/constraints-cuda.txt
	$(PY) -m pip install -c $(VENV)/constraints-cuda.txt -e ".[torch,dev]"
endif
	touch $@

# Main job: stutz-rectangles for 1 epoch on generated data (no download), images + metrics in runs/.
train: install
	$(PY) -m jax_vae train --preset stutz-rectangles --epochs 1 --no-progress

# The two suites run side by side (make -j2; each one's output printed whole when it ends). The parity
# suite runs in its own process: it enables jax_enable_x64, which is process-global; one process, as
# its files share cached runs (harness: two workers took 12.5 min against 10.6). tests/ runs on two
# pytest-xdist workers, a test file each at a time (--dist loadfile: module fixtures built once):
# 10.0 min against 15.7 on the 2-core CI machine. XDIST= runs it in one process.
XDIST ?= -n 2 --dist loadfile
PYTEST := $(PY) -m pytest -q -p no:cacheprovider
test: install
	$(MAKE) --no-print-directory -j2 --output-sync=target test-parity test-unit

# A short local check (about a minute of CPU), not the suite: the weight converter's parity, then the
# layout and objective unit tests (parity in its own process, as in `make test`).
test-quick: install
	$(PY) -m pytest parity_tests/test_convert.py -q -p no:cacheprovider
	$(PY) -m pytest tests/layout/test_architecture.py tests/models/test_objectives.py -m "not slow" -q -p no:cacheprovider

test-parity: install
	$(PYTEST) parity_tests

test-unit: install
	$(PYTEST) tests $(XDIST)

# Lint (ruff), formatting check (ruff format), types (mypy; --strict's flags on jax_vae/common) and the
# house's contracts (tests/layout: layers import downward, no cycles, mirrored files and signatures,
# the public face, the wheel's contents).
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest -q -p no:cacheprovider tests/layout

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

parity-report: install
	$(PY) -m parity_tests.report

# The CPU grid into the committed results, named explicitly (BENCH_OUT=DIR to write elsewhere).
BENCH_OUT ?= benchmarks/results/cpu-amd-epyc-2t
bench: install
	$(PY) -m benchmarks.throughput --grid cpu --out $(BENCH_OUT)

# Smoke run of every CPU mode: writes only the git-ignored runs/bench/tiny-<device>/ (printed).
bench-tiny: install
	$(PY) -m benchmarks.throughput --grid tiny

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
