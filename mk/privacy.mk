# Differential privacy's accountant (edgefed.federation.dp): Google's dp-accounting. Its declared pins
# (attrs<24, dm-tree~=0.1.8) would downgrade the attrs this venv already has for jsonschema and
# hypothesis, and the RDP accountant edgefed calls imports neither dm-tree nor anything attrs 24+
# changed. So its real run-time needs (absl-py, mpmath, scipy; TensorFlow and scikit-learn bring them
# already) are installed as usual, then dp-accounting with --no-deps, then a calibration proves it works.
# `pip check` reports dp-accounting's attrs and dm-tree pins as unmet: expected (docs/privacy.md).
PRIVACY_PIN := dp-accounting==0.6.0

$(VENV)/.privacy-installed: $(VENV)/.installed mk/privacy.mk
	$(PIP) install --quiet 'absl-py>=1.0' 'mpmath>=1.2' 'scipy>=1.7'
	$(PIP) install --quiet --no-deps $(PRIVACY_PIN)
	$(PY) -c "from edgefed.federation.dp import DpPlan; \
	  plan = DpPlan.calibrate(8.0, 1e-5, 1.0, 10); \
	  print('dp-accounting OK: noise multiplier', round(plan.noise_multiplier, 3), 'for epsilon 8 over 10 rounds')"
	touch $@

SETUP_TARGETS += $(VENV)/.privacy-installed

.PHONY: test-privacy bench-privacy test-secagg bench-secagg
test-privacy: setup ## differential privacy and model provenance tests (the provenance ones need TensorFlow)
	$(PY) -m pytest tests/unit/test_dp.py tests/unit/test_model_records.py tests/integration/test_dp_demo.py \
	  tests/tf/test_provenance.py

bench-privacy: setup ## accuracy vs epsilon on digits (bench/bench_privacy.py: docs/benchmarks.md, docs/bench/privacy.json)
	$(PY) bench/bench_privacy.py

test-secagg: setup ## secure aggregation: the protocol's maths, its wire messages, a real chief with workers, and the demo with its ledger (~30 s more)
	EDGEFED_SECAGG_LONG=1 $(PY) -m pytest tests/unit/test_secagg.py tests/integration/test_secure_aggregation.py

bench-secagg: setup ## secure aggregation's extra messages, bytes and seconds per round at N = 8 and 32, in one process and live (prints two tables)
	$(PY) bench/bench_secagg.py --workers 8 32 --params 100000 --dropouts 0 1 --repeats 3 --live --rounds 4
