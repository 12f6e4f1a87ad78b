# Thin aliases: every target is one readable command. `make reproduce` and `make test` set up
# .venv on first use (torch/torchvision pinned), so a fresh clone needs nothing else.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PROFILE ?= default
JOBS    ?= 2

.PHONY: setup reproduce test lint format lab clean-artifacts

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name compresslib --display-name "Python (compresslib)"
	touch $@

# the report is built even when a stage failed (it shows which); the exit status is the runner's
reproduce: setup
	$(PY) -m compresslib.workbook.reproduce --profile $(PROFILE) --jobs $(JOBS); status=$$?; $(PY) -m compresslib.workbook.report; exit $$status

test: setup lint
	$(PY) -m pytest

# ruff (configured in pyproject.toml): lint + formatting check; `make format` rewrites the files
lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff format .

lab: setup
	$(VENV)/bin/jupyter lab notebooks

clean-artifacts:
	rm -rf artifacts
