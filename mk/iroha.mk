# A real Hyperledger Iroha 1.6 peer (issue 21, docs/ledger.md "Against a real Iroha peer").
#   make iroha-peer   install the bookworm build dependencies, check ../shared/third_party against its
#                     SHA256SUMS, apply scripts/iroha/patches, build iroha-ed25519 and irohad (Release,
#                     -DTESTING=OFF, ninja) at the lowest CPU/IO priority and cache the binary in
#                     $(IROHA_CACHE)/<hash of sources, patches and flags>/bin/irohad: built once per
#                     machine (30-60 min on 2 cores), a second run does nothing
#   make test-iroha   start a single irohad (RocksDB, fresh genesis) and run against it: tests/iroha
#                     (backend, bootstrap-iroha, a demo with backend = "iroha" and verify, a p2p
#                     transfer, the double compared with the peer) and the live test of
#                     tests/integration/test_ledger_iroha.py; then stop the peer and remove its state.
#                     Not part of `make test`, which keeps the Torii double.
#   make bench-iroha  records/s and commit latency on the real peer (bench/bench_iroha.py)
IROHA_CACHE ?= /var/cache/edgefed-iroha
IROHA_JOBS ?= 2
IROHA_TESTS := tests/iroha tests/integration/test_ledger_iroha.py::test_against_a_real_iroha_peer

.PHONY: iroha-peer test-iroha bench-iroha
iroha-peer: ## build irohad 1.6 from ../shared/third_party once per machine (cached outside the repo)
	IROHA_CACHE=$(IROHA_CACHE) IROHA_JOBS=$(IROHA_JOBS) scripts/iroha/build-peer.sh

test-iroha: setup iroha-peer ## the ledger against a real single-peer irohad (not part of make test)
	IROHA_CACHE=$(IROHA_CACHE) scripts/iroha/test-iroha.sh $(PY) -m pytest -p no:cacheprovider $(IROHA_TESTS)

bench-iroha: setup iroha-peer ## records/s and commit latency of the real peer beside the embedded chain
	IROHA_CACHE=$(IROHA_CACHE) $(PY) bench/bench_iroha.py
