# edgefed developer entry points. `make setup` installs everything the tests need into .venv
# (and the side environments the fragments in mk/ declare); nothing is installed by hand.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

# Fragments append to these: extra setup steps, and test targets run by `make test`.
SETUP_TARGETS := $(VENV)/.installed
SLOW_TEST_TARGETS :=

.PHONY: setup test test-fast lint demo clean help
help: ## this list: every target with its comment (Makefile and mk/*.mk)
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-zA-Z0-9_.-]+:[^=]*## / {printf "make %-20s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml requirements/tools.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[tf,lite,ops,demo,observe,dev]' -r requirements/tools.txt
	touch $@

include $(wildcard mk/*.mk)

setup: $(SETUP_TARGETS) ## install the project and its test tools into .venv (and the side environments)

lint: setup ## ruff and mypy over edgefed, tests and bench
	$(VENV)/bin/ruff check edgefed tests bench
	$(VENV)/bin/mypy

test-fast: setup lint ## lint, unit and loopback integration tests (no Docker)
	$(PY) -m pytest -m "not lab" tests

test: test-fast $(SLOW_TEST_TARGETS) ## the whole suite: test-fast, then the slow targets (Docker lab, Ansible hosts)

demo: setup ## chief + 3 workers on loopback, 5 rounds on the digits data set
	$(VENV)/bin/edgefed demo --workers 3 --rounds 5

clean: ## remove .venv and the caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist *.egg-info
