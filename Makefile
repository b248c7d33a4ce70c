# Every target sets up the virtual environment first if it is missing or stale.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= shapes
# The notebooks' Jupyter kernel: this environment's Python, registered inside the venv (--sys-prefix), so
# only a Jupyter started from this venv (make lab, papermill, nbval) finds it; elsewhere the notebooks ask
# for a kernel instead of running in whatever environment is at hand.
KERNEL := searle
KERNELSPEC := $(VENV)/share/jupyter/kernels/$(KERNEL)/kernel.json
# Root installs system packages directly (CI); everyone else through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup run-setup run bench gpu-bench figures world-weights quick paper-smoke annotations test test-fast lint format nbval lab browser-setup browser-test clean-runs

# Two steps: what `make run` needs (the package and papermill's kernel: the `run` extra), then the rest
# (JupyterLab, the test tools) for every other target, so the main job from a fresh clone installs less.
setup: $(VENV)/.installed $(KERNELSPEC)
run-setup: $(VENV)/.installed-run $(KERNELSPEC)

# pip byte-compiles one file at a time (about 80 s of a 160-s fresh setup, mostly torch); compileall uses
# every core, leaving out the packages' own test suites (never imported: a quarter of the files). A few
# files of torch's test helpers are written for newer Pythons: pip skips them too.
$(VENV)/.installed-run: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet --no-compile -e '.[run]'
	$(PY) -m compileall -qq -j 0 -x '/tests/' $(VENV)/lib || true
	touch $@

$(VENV)/.installed: $(VENV)/.installed-run
	$(PY) -m pip install --quiet --no-compile -e '.[test,notebooks]'
	$(PY) -m compileall -qq -j 0 -x '/tests/' $(VENV)/lib || true
	touch $@

$(KERNELSPEC): $(VENV)/.installed-run
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (searle)"

# The main job on the embedded default: the offline shapes world end to end. Everything it writes
# goes under runs/ (ignored by git), so a fresh clone's `make run` leaves `git status` clean.
run: run-setup
	$(VENV)/bin/searle paper --profile $(PROFILE)

# Speed benchmarks beside the library (benchmarks/), e.g. make bench BENCH="oti --steps 3 --threads 1".
BENCH ?= oti --steps 3
bench: setup
	$(PY) -m benchmarks $(BENCH)

# On a CUDA machine: OTI per image, the project's recipe vs the authors' (fp16 autocast, batch 32), ViT-B-32 and
# ViT-L-14 with random weights, and the paper's 100k-image OTI projected in GPU-hours. Fails clearly without CUDA.
gpu-bench: run-setup
	$(PY) -m benchmarks gpu $(GPU_BENCH)

# Refresh the committed figures/ (the README's) from the last `make run`: a deliberate step, since
# numbers move in the second decimal between machines and so do the pixels that show them.
figures:
	test -d runs/$(PROFILE)/figures || { echo "no runs/$(PROFILE)/figures: run 'make run' first"; exit 1; }
	cp runs/$(PROFILE)/figures/*.png figures/

# Maintainers, after changing the world or its CLIP's recipe: train both world CLIPs here and write the
# package's shipped weights (searle_core/world/weights/, read instead of training on every machine).
world-weights: setup
	$(VENV)/bin/searle world build --quick --ship --samples 0
	$(VENV)/bin/searle world build --ship --samples 0

quick: run-setup
	$(VENV)/bin/searle paper --profile quick

# The paper path at toy size (real annotation layouts, random ViT-B-32 as OpenAI weights, CPU).
paper-smoke: setup
	$(PY) tests/paper_smoke_data.py runs/paper-smoke-data
	$(VENV)/bin/searle paper --profile paper-smoke

# The public CIRR, FashionIQ and CIRCO annotation files and the Open Images V7 class list, at pinned
# versions, checked by SHA-256, into data/annotations (git-ignored); the real-data tests read them there
# when no ../shared/data folder sits beside the repository. Offline, from a local copy in the same layout:
# $(PY) -m tools.annotations --dest data/annotations --from DIR
annotations: setup
	$(PY) -m tools.annotations --dest data/annotations

# The fast tier first, then the slow one (world CLIP, notebooks): conftest orders them. The notebooks run
# once, through papermill's quick profile (tests/test_notebooks.py), which also checks nbval's cells.
test: setup
	$(PY) -m pytest tests -p no:cacheprovider --ignore=tests/browser

# The fast tier alone (seconds to a few minutes: no world CLIP, no notebook).
test-fast: setup
	$(PY) -m pytest tests -m "not slow" -p no:cacheprovider --ignore=tests/browser

# ruff: lint and format check of the package and the tests (configured in pyproject.toml).
lint: setup
	$(VENV)/bin/ruff check searle_core tests benchmarks reference tools
	$(VENV)/bin/ruff format --check searle_core tests benchmarks reference tools

# Apply ruff's formatting and safe fixes.
format: setup
	$(VENV)/bin/ruff check --fix searle_core tests benchmarks reference tools
	$(VENV)/bin/ruff format searle_core tests benchmarks reference tools

# nbval itself: each notebook executed with its defaults, its # NBVAL_CHECK_OUTPUT cells compared.
# make test makes the same comparison on its quick run instead of executing the notebooks twice.
nbval: setup
	$(PY) -m pytest notebooks --nbval-lax --nbval-current-env -p no:cacheprovider

# JupyterLab on notebooks/ with the searle kernel (LAB_ARGS: e.g. --no-browser --port 8899).
# Jupyter refuses to run as root unless told; CI containers and some docker setups are root.
lab: setup
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=notebooks $(if $(SUDO),,--allow-root) $(LAB_ARGS)

# The notebooks as people see them: JupyterLab in headless Chromium (Debian's chromium, driven by
# Playwright's Python package; no browser is downloaded). Screenshots go to runs/browser/.
browser-setup: $(VENV)/.browser

$(VENV)/.browser: $(VENV)/.installed
	command -v chromium >/dev/null || ($(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)
	$(PY) -m pip install --quiet -e '.[test,notebooks,browser]'
	touch $@

browser-test: setup browser-setup
	SEARLE_BROWSER_TEST=1 $(PY) -m pytest tests/browser -p no:cacheprovider
	@cat runs/browser/summary.json

clean-runs:
	rm -rf runs
