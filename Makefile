# edgefed developer entry points. `make setup` installs everything the tests need into .venv
# (and the side environments the fragments in mk/ declare); nothing is installed by hand.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

# Fragments append to these: extra setup steps, and the test targets `make test` runs after test-fast
# (longest first; they build the lab images they need).
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

# Two pytest workers, a test file each at a time (module fixtures stay in one process): most of these
# tests wait on processes, sockets and TLS handshakes rather than compute, so two share 2 cores well.
FAST_TEST_WORKERS ?= 2
test-fast: setup lint ## lint, unit and loopback integration tests (no Docker); FAST_TEST_WORKERS=0: one process
	$(PY) -m pytest -n $(FAST_TEST_WORKERS) --dist loadfile -m "not lab" tests

# Two jobs at a time (the machines have 2 cores), in the order listed (scripts/test-lanes.sh): the
# fast suite in one lane while the other builds the images the Pi lab needs and runs it (the longest
# target: emulated ARM), then the other slow targets, longest first, in whichever lane frees (each has
# its own containers, network and state directory). Setup, the Docker engine and qemu's binfmt
# handlers come first, alone: they may run apt-get, which takes a lock. Each target's output is
# printed in one piece when it ends.
test: setup ## the whole suite: test-fast beside the Pi lab, then the other slow targets, two at a time
	@$(MAKE) --no-print-directory lab-engine lab-binfmt
	MAKE="$(MAKE)" scripts/test-lanes.sh test-fast $(SLOW_TEST_TARGETS)

demo: setup ## chief + 3 workers on loopback, 5 rounds on the digits data set
	$(VENV)/bin/edgefed demo --workers 3 --rounds 5

clean: ## remove .venv and the caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist *.egg-info
