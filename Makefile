# Every target sets up the virtual environment first if it is missing or stale.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= shapes

.PHONY: setup run figures quick test nbval clean-runs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e '.[test,notebooks]'
	touch $@

# The main job on the embedded default: the offline shapes world end to end. Everything it writes
# goes under runs/ (ignored by git), so a fresh clone's `make run` leaves `git status` clean.
run: setup
	$(VENV)/bin/searle paper --profile $(PROFILE)

# Refresh the committed figures/ (the README's) from the last `make run`: a deliberate step, since
# numbers move in the second decimal between machines and so do the pixels that show them.
figures:
	test -d runs/$(PROFILE)/figures || { echo "no runs/$(PROFILE)/figures: run 'make run' first"; exit 1; }
	cp runs/$(PROFILE)/figures/*.png figures/

quick: setup
	$(VENV)/bin/searle paper --profile quick

test: setup
	$(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env -p no:cacheprovider

clean-runs:
	rm -rf runs
