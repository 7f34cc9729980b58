# One command for the main job, one for the tests (README.md). Both set everything up first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEMO   := data/demo
# The PyTorch wheel index for this machine's NVIDIA driver, chosen by scripts/torch_index.sh: empty (PyPI's
# torch 2.11.0, built for CUDA 13.0: driver >= 580, or no GPU) or the CUDA 12.6 build (drivers 525-579).
# Set it to override, e.g. `make setup TORCH_INDEX=https://download.pytorch.org/whl/cu128`. An existing venv
# keeps its torch: `rm .venv/.installed` first.
TORCH_INDEX ?= $(shell bash scripts/torch_index.sh)

.PHONY: setup venv engines demo notebook test test-slow lint clean

setup: venv engines

# The virtual environment, rebuilt when pyproject.toml changes. samtts is installed --no-deps:
# it declares pyaudio, which does not build here and is not needed to write files.
# `.[all,dev]`: the whole pipeline (the sweep, ssl and corpus extras) and the test tools; a plain
# `pip install .` is the light set that traces, enrols and evaluates with a bundle.
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH_INDEX),$(PY) -m pip install -q --index-url $(TORCH_INDEX) torch==2.11.0 torchaudio==2.11.0)
	$(PY) -m pip install -q -e '.[all,dev]'
	$(PY) -m pip install -q --no-deps 'samtts==0.3.0'
	touch $@

# Debian TTS engines of the corpus (main, plus contrib/non-free through a private sources list).
engines:
	bash scripts/setup_engines.sh

# The main job: build the demo corpus, run the demo sweep (local Ray, sqlite MLflow), print Table 1.
demo: setup
	$(PY) -m sourcetrace.cli corpus build --out $(DEMO) --preset demo
	$(PY) -m sourcetrace.cli sweep sweeps/demo.py --root $(DEMO) --no-analyze

# Jupyter (the `notebook` extra, installed on first use) on 127.0.0.1, opening the Table-1 notebook; it finds
# ray_results/demo/report by itself, SOURCETRACE_REPORT=DIR picks another report. Jupyter refuses root
# unless told: this target runs where `make demo` ran, root included.
notebook: $(VENV)/.notebook
	$(VENV)/bin/jupyter notebook --ip=127.0.0.1 $(if $(filter 0,$(shell id -u)),--allow-root) analysis/table1.ipynb
$(VENV)/.notebook: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[notebook]'
	touch $@

# The default test run: everything but the end-to-end tests marked slow (a few minutes on 2 cores).
test: setup
	$(PY) -m pytest -q -m 'not slow'

# The slow tier: real Ray sweeps, SIGKILL + resume, MLflow server, multi-node, training-based tests.
test-slow: setup
	$(PY) -m pytest -q -m slow

# Lint, format check and the house plan's import contracts (ruff and import-linter, configured in
# pyproject.toml); CI runs it.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) ray_results mlruns mlflow.db
