# Every target installs what it needs into .venv (pip; idempotent: re-runs only when pyproject.toml changes).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export WANDB_MODE ?= offline
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: install test test-fast demo lint format bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch/torchvision pinned exactly: they come from local disk (a range would pull a multi-GB build)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	# export: ONNX Runtime / OpenVINO / NNCF, so every export and runtime test runs (none is skipped on a CPU)
	$(PY) -m pip install -q -e ".[dev,sweep,export]"
	# MTCNN weights ship inside facenet-pytorch; its declared pins would replace torch, hence --no-deps
	$(PY) -m pip install -q --no-deps facenet-pytorch==2.6.0
	touch $(STAMP)

install: $(STAMP)

# The suite runs in TEST_WORKERS processes (pytest-xdist), one thread each (tests/conftest.py).
TEST_WORKERS ?= 2

# W&B writes into a fresh folder, removed afterwards whatever the result (the disk is shared with CI).
test: install
	d=$$(mktemp -d) && WANDB_DIR=$$d $(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup; rc=$$?; rm -rf $$d; exit $$rc

test-fast: install
	d=$$(mktemp -d) && WANDB_DIR=$$d $(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not slow"; \
	rc=$$?; rm -rf $$d; exit $$rc

demo: install
	$(PY) -m pipnet_lit.train +experiment=synthetic ckpt_path=last

lint: install
	$(VENV)/bin/ruff check src tests experiments
	$(VENV)/bin/ruff format --check src tests experiments

format: install
	$(VENV)/bin/ruff format src tests experiments
	$(VENV)/bin/ruff check --fix src tests experiments

bench: install
	$(PY) experiments/bench/bench_cpu.py
	$(PY) experiments/bench/bench_cpu.py --size 128 --stride 16 --out experiments/bench/results/cpu_128_s16.json
	$(PY) experiments/bench/bench_pipeline.py
	$(PY) experiments/bench/bench_inference.py

clean:
	rm -rf outputs multirun .pytest_cache
