# Issue 19 in the lab (tests/ansible/test_ansible_trust_lab.py): one live federation on containers of the
# lab image (a chief and pi-1..pi-4, network trust-lab-*) while site.yml rotates every certificate,
# revokes pi-2, teardown.yml --limit pi-2 retires it and site.yml --limit pi-4 adds a late joiner.
# Opt-in and long (see docs/operations.md, "Proven in the lab"): not part of `make test`.
#   EDGEFED_TRUST_LAB_STEPS  local steps per round (the run is open-ended until its last step sets the end)

.PHONY: test-lab-trust
test-lab-trust: setup lab-image ## revoke, rotate, remove and add workers on a live federation in containers (opt-in, long)
	EDGEFED_TRUST_LAB=1 EDGEFED_LAB_IMAGE=$(LAB_IMAGE) $(PY) -m pytest -m lab -s tests/ansible/test_ansible_trust_lab.py
