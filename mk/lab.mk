# The Docker lab (issue 7, docs/lab.md): a chief and two workers as systemd containers on their own
# network, reached over SSH through inventory/lab; molecule/default drives it.
#   make lab       build the image if needed, start the lab, run site.yml, train, verify, show status
#   make lab-down  remove the containers, the network, the AWS double and the lab's keys
#   make test-lab  the whole molecule scenario (part of `make test`): up, verify, idempotence,
#                  teardown check, down
# EDGEFED_LAB_ARM=1 make lab / test-lab: lab-worker2 is the arm64 image (molecule/image/build.sh --arch arm64,
# run by qemu-user-static), converged by site.yml like the others;
# not part of `make test` (docs/lab.md, "ARM nodes", has its cost).
# EDGEFED_LAB_IROHA=1 make lab: the chief also runs irohad (playbooks/iroha.yml) and the ledger services
# write to it; needs `make iroha-peer` (run first when missing) and the image with irohad's runtime
# libraries (molecule/image/build-iroha.sh). Unset, everything here is as without it.

MOLECULE := $(VENV)/bin/molecule
# The image tag follows the build script's content: it is built once, rebuilt when the script changes.
LAB_IMAGE_SCRIPT := molecule/image/$(if $(filter 1,$(EDGEFED_LAB_IROHA)),build-iroha.sh,build.sh)
LAB_IMAGE = $$($(LAB_IMAGE_SCRIPT))
LAB_IROHA_PEER := $(if $(filter 1,$(EDGEFED_LAB_IROHA)),iroha-peer)
# The image of lab-worker2: the arm64 one with EDGEFED_LAB_ARM=1, else the others'.
LAB_WORKER2_IMAGE = $(if $(filter 1,$(EDGEFED_LAB_ARM)),$$(molecule/image/build.sh --arch arm64),$(LAB_IMAGE))
# Emulated ARM containers need the host's qemu handlers to honour setuid (sudo, Ansible's become).
LAB_ARM_BINFMT := $(if $(filter 1,$(EDGEFED_LAB_ARM)),lab-binfmt)
# The "fresh host" variant (systemd, sshd, sudo, python3 only) that tests/ansible converges from nothing.
LAB_FRESH_IMAGE = $$(molecule/image/build.sh --fresh)

.PHONY: lab lab-down test-lab lab-lint lab-image lab-image-fresh lab-engine lab-image-arm lab-arm-smoke lab-binfmt
lab-engine: ## start dockerd if it is not running
	@scripts/lab/ensure-docker.sh

lab-image: lab-engine ## build the lab's systemd image when its script changed
	@$(LAB_IMAGE_SCRIPT) >/dev/null

lab-image-arm: lab-engine ## build the arm64 and armhf lab images (qemu-user-static + binfmt_misc)
	@molecule/image/build.sh --arch arm64 >/dev/null
	@molecule/image/build.sh --arch armhf >/dev/null

lab-binfmt: ## give the host's qemu-aarch64/qemu-arm handlers the C flag (sudo in emulated containers)
	@scripts/lab/binfmt-credentials.sh aarch64 arm

lab-arm-smoke: setup lab-engine ## an ARM container (ARCH=arm64, default, or armhf) installs its wheelhouse offline and trains (times)
	@molecule/image/build.sh --arch $${ARCH:-arm64} >/dev/null
	PYTHON=$(VENV)/bin/python scripts/lab/arm-worker-smoke.sh

lab-image-fresh: lab-engine ## build the fresh-host image (systemd, sshd, python3 only) when its script changed
	@molecule/image/build.sh --fresh >/dev/null

lab: setup lab-image $(LAB_IROHA_PEER) $(LAB_ARM_BINFMT) ## Docker lab: start, deploy site.yml, train, verify, show status
	@scripts/lab/snapshot-source.sh >/dev/null  # deploy the working tree as it is now
	EDGEFED_LAB_IMAGE=$(LAB_IMAGE) EDGEFED_LAB_WORKER2_IMAGE=$(LAB_WORKER2_IMAGE) $(MOLECULE) converge
	EDGEFED_LAB_IMAGE=$(LAB_IMAGE) EDGEFED_LAB_WORKER2_IMAGE=$(LAB_WORKER2_IMAGE) $(MOLECULE) verify
	$(VENV)/bin/edgefed status -i inventory/lab --known-hosts .lab/known_hosts

lab-down: setup lab-engine ## remove the lab's containers, network, AWS double and keys
	$(MOLECULE) destroy

# The lab's own playbooks and helpers (the roles have their gates in mk/ansible.mk).
lab-lint: setup ## lint the lab's playbooks and helper scripts
	$(VENV)/bin/ansible-lint --offline --profile production molecule/default inventory/lab
	$(VENV)/bin/ruff check scripts/lab molecule/default/files
	$(VENV)/bin/mypy --strict scripts/lab/aws_double.py molecule/default/files/tls_probe.py molecule/default/files/field_cut.py

test-lab: setup lab-lint lab-image $(LAB_IROHA_PEER) $(LAB_ARM_BINFMT) ## the whole molecule scenario (up, verify, idempotence, teardown, down)
	EDGEFED_LAB_IMAGE=$(LAB_IMAGE) EDGEFED_LAB_WORKER2_IMAGE=$(LAB_WORKER2_IMAGE) $(MOLECULE) test

SLOW_TEST_TARGETS += test-lab
SLOW_TEST_IMAGES += lab-image
