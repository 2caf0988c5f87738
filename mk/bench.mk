# `make bench`: the benchmarks of docs/benchmarks.md (issue 9). Not part of `make test`: the numbers
# depend on the machine and its load, so they are measured and written down, never asserted.
#   bench/bench_flower.py      one FedAvg round: edgefed vs Flower vs raw TLS; chief memory vs N
#   bench/bench_seed_table.py  the seed's table: single node vs synchronous SGD vs FedAvg, 6 nodes in
#                              network namespaces behind shaped links (needs root: ip netns, tc)
#   bench/bench_ledger.py      the ledger's records/s and round time with the ledger on vs off
#   bench/bench_poisoning.py   accuracy of each aggregation strategy with k of 10 workers attacking
# Options: make bench BENCH_FLOWER_ARGS="--workers 2 8 --sizes 1 16" BENCH_SEED_ARGS="--steps 300"
#
# Flower runs in its own environment: flwr pins protobuf/grpcio versions of its own, and the project's
# .venv pins others (mk/ledger.mk). flwr 1.41.0 is the newest whose dependencies the package index
# here can satisfy (1.42 needs a newer certifi). Built on first use, not by `make setup`.
FLWR_VENV ?= .venv-flwr
FLWR_PIN := flwr==1.41.0
BENCH_FLOWER_ARGS ?=
BENCH_SEED_ARGS ?=
BENCH_POISONING_ARGS ?=

$(FLWR_VENV)/.installed: mk/bench.mk
	rm -rf $(FLWR_VENV)
	$(PYTHON) -m venv $(FLWR_VENV)
	$(FLWR_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(FLWR_VENV)/bin/python -m pip install --quiet $(FLWR_PIN)
	FLWR_TELEMETRY_ENABLED=0 $(FLWR_VENV)/bin/python -c "import flwr, numpy; \
	  from flwr.server import start_server; from flwr.client import start_client; print('flwr', flwr.__version__)"
	touch $@

.PHONY: bench bench-flower bench-seed-table bench-poisoning bench-compression
bench: bench-flower bench-seed-table bench-poisoning bench-compression ## every benchmark; updates docs/benchmarks.md and docs/bench/*.png
	@if [ -f bench/bench_ledger.py ]; then $(MAKE) --no-print-directory bench-ledger; fi
	@echo "docs/benchmarks.md and docs/bench/*.png updated"

bench-flower: setup $(FLWR_VENV)/.installed ## one FedAvg round: edgefed vs Flower vs raw TLS
	$(PY) bench/bench_flower.py $(BENCH_FLOWER_ARGS)

bench-seed-table: setup ## the seed's table in network namespaces (needs root)
	$(PY) bench/bench_seed_table.py $(BENCH_SEED_ARGS)

bench-poisoning: setup ## k of 10 workers attacking, final accuracy and chief cost per aggregation strategy
	$(PY) bench/bench_poisoning.py $(BENCH_POISONING_ARGS)

bench-compression: setup ## compressed updates: bytes, throughput and accuracy per format (no sockets)
	$(PY) bench/bench_compression.py
