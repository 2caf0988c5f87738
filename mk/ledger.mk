# Hyperledger Iroha client for the ledger's `iroha` backend and its tests (against the Torii test
# double). `pip install iroha==1.6.0.2` fails on Python 3.11: it pins grpcio-tools and protobuf<=3.20.1,
# but at run time the package imports only grpc, protobuf and nacl. So those are installed pinned (the
# versions TensorFlow in the same venv accepts), then iroha with --no-deps, then an import check that
# proves iroha's generated protobuf modules work with this protobuf runtime. `pip check` reports
# iroha's declared requirements as unmet: expected, see docs/ledger.md ("Packaging").
LEDGER_PINS := grpcio==1.85.1 protobuf==7.36.2 pynacl==1.6.2
IROHA_PIN := iroha==1.6.0.2

$(VENV)/.ledger-installed: $(VENV)/.installed mk/ledger.mk
	$(PIP) install --quiet $(LEDGER_PINS)
	$(PIP) install --quiet --no-deps $(IROHA_PIN)
	$(PY) -c "from iroha import IrohaCrypto, endpoint_pb2_grpc, qry_responses_pb2; \
	  from google.protobuf.internal import api_implementation as api; \
	  print('iroha client OK with protobuf runtime', api.Type())"
	touch $@

SETUP_TARGETS += $(VENV)/.ledger-installed

.PHONY: test-ledger bench-ledger
test-ledger: setup ## the ledger's unit and integration tests (embedded and Iroha double)
	$(PY) -m pytest tests/unit/test_ledger_records.py tests/unit/test_ledger_file_records.py \
	  tests/unit/test_ledger_store.py tests/unit/test_ledger_readonly.py \
	  tests/integration/test_ledger_embedded.py tests/integration/test_ledger_iroha.py \
	  tests/integration/test_p2p_ledger.py tests/integration/test_p2p_ledger_iroha.py

bench-ledger: setup ## ledger records/s and round time with the ledger on vs off
	$(PY) bench/bench_ledger.py
