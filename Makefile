# `make demo` and `make test` build everything they need from nothing.
# torch is pinned and installed first: an unpinned torch pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.sage-installed
PIP    := $(BIN)/python -m pip
PYTEST_ARGS ?=

# DeepSpeed JIT-builds a small CPU communication op on first use: build it once, here.
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: env demo lint test test-fast bench gpu-check cli-docs clean help

help:
	@echo "make demo   create the environment, run the quickstart sweep, print the Pareto front, write a plot"
	@echo "make test   create the environment, lint (ruff, mypy) and run the whole test suite (what CI runs)"
	@echo "make lint   ruff and mypy over sage_core, sweeps and analysis (settings in pyproject.toml)"
	@echo "make bench  run the benchmarks in bench/ (prints ratios; see bench/RESULTS.md)"
	@echo "make gpu-check  one GPU, < 8 min: paper-scale step, image generation, NudeNet, shared-GPU sweep, attack depth (tiny on CPU)"
	@echo "make cli-docs   regenerate docs/cli.md from the --help of every sage command"

env: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q torch==2.13.0
	# DeepSpeed ships as a source package whose build imports torch: build it against ours.
	$(PIP) install -q -c constraints.txt --no-build-isolation deepspeed
	# open-clip-torch only for its CLIP BPE merges file (sd14-init's tokenizer, sage_core/clip_init.py).
	# --no-deps: its dependencies would add torchvision (a build tied to one torch build, which
	# transformers/diffusers then import) and timm, neither used here; we never import open_clip.
	$(PIP) install -q -c constraints.txt --no-deps "open-clip-torch>=3.0"
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	# syne-tune for its MO-ASHA (tests/test_search_replay.py replays it); --no-deps: MO-ASHA needs only
	# dill beyond what is here (its xgboost/statsmodels/NCCL serve other schedulers; `pip install -e
	# .[bench]` brings them all), so pip may warn that xgboost is missing.
	$(PIP) install -q -c constraints.txt --no-deps "syne-tune==0.16.0" "dill>=0.3"
	$(BIN)/sage doctor
	touch $@

demo: env
	$(BIN)/sage sweep run quickstart --storage runs/demo
	$(BIN)/sage pareto runs/demo --x matched_auc --y util_sib --plot runs/demo/pareto.png

# The tests marked `numerics` pin numbers from runs. They run first under another CPU kernel path and
# thread count than the main run (this machine's best path, tests/conftest.py's 1 thread), so a pin
# that holds only on one machine's kernels fails here, not on a user's machine.
NUMERICS_ENV := ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=2 MKL_NUM_THREADS=2

# ruff, then mypy (incremental: its cache lives in .mypy_cache); both read their settings from pyproject.toml.
lint: env
	$(BIN)/ruff check sage_core sweeps analysis
	$(BIN)/mypy sage_core sweeps analysis

test: env lint
	$(NUMERICS_ENV) $(BIN)/python -m pytest -q -m numerics $(PYTEST_ARGS)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: env
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: env
	$(BIN)/python bench/bench_step.py

# One script, one table, one JSON (runs/gpu-check/gpu_check.json); without a CUDA device it runs
# the same parts at tiny size on CPU.
gpu-check: env
	$(BIN)/python bench/gpu_check.py $(GPU_CHECK_ARGS)

# docs/cli.md is generated from --help; tests/test_docs.py fails when it is stale.
cli-docs: env
	$(BIN)/python -m sweeps.cli.reference --write docs/cli.md

clean:
	rm -rf $(VENV) .cache runs .pytest_cache .mypy_cache .ruff_cache
