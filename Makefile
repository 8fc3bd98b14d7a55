# wsi-seg: set-up, tests and the demo.
# TORCH pins a CPU build of PyTorch by default; override with e.g. `make TORCH=torch==2.14.1`.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-all demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

OSD := wsi_seg/review/vendor/node_modules/openseadragon/build/openseadragon/openseadragon.min.js

$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

# OpenSeadragon for the review viewer (npm registry, exact version from the lock file);
# without npm, the locked tarball is fetched and checked against the lock file's hash.
$(OSD): wsi_seg/review/vendor/package.json wsi_seg/review/vendor/package-lock.json
	if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix wsi_seg/review/vendor --no-audit --no-fund; \
	else \
		$(PYTHON) wsi_seg/review/vendor/fetch_openseadragon.py; \
	fi
	touch $(OSD)

install: $(STAMP) $(OSD)

test: $(STAMP) $(OSD)
	$(BIN)/python -m pytest -q

test-all: $(STAMP) $(OSD)
	$(BIN)/python -m pytest -q -m "slow or not slow"

demo: $(STAMP) $(OSD)
	$(BIN)/wsi-seg demo --workdir demo

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache wsi_seg/review/vendor/node_modules
