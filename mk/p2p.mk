# p2p chat and file transfer (docs/p2p.md): its own tests, and the transfer benchmark.
.PHONY: test-p2p bench-p2p
test-p2p: setup ## p2p chat and file transfer tests
	$(PY) -m pytest tests/unit/test_p2p_parse.py tests/unit/test_p2p_names.py tests/unit/test_p2p_partfiles.py \
	  tests/integration/test_p2p_threads.py tests/integration/test_p2p_processes.py tests/integration/test_p2p_ledger.py

bench-p2p: setup ## the p2p transfer benchmark
	$(PY) bench/bench_p2p.py
