# Every target sets up the virtual environment first if it is missing or stale.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= shapes

.PHONY: setup run quick paper-smoke test nbval clean-runs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e '.[test,notebooks]'
	touch $@

# The main job on the embedded default: the offline shapes world end to end.
run: setup
	$(VENV)/bin/searle paper --profile $(PROFILE)

quick: setup
	$(VENV)/bin/searle paper --profile quick

# The paper path at toy size (real annotation layouts, random ViT-B-32 as OpenAI weights, CPU).
paper-smoke: setup
	$(PY) tests/paper_smoke_data.py runs/paper-smoke-data
	$(VENV)/bin/searle paper --profile paper-smoke

test: setup
	$(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env -p no:cacheprovider

clean-runs:
	rm -rf runs
