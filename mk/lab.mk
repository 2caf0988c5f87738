# The Docker lab (issue 7, docs/lab.md): a chief and two workers as systemd containers on their own
# network, reached over SSH through inventory/lab; molecule/default drives it.
#   make lab       build the image if needed, start the lab, run site.yml, train, verify, show status
#   make lab-down  remove the containers, the network, the AWS double and the lab's keys
#   make test-lab  the whole molecule scenario (part of `make test`): up, verify, idempotence,
#                  teardown check, down
# EDGEFED_LAB_ARM=1 make lab / test-lab: lab-worker2 is the arm64 image (molecule/image/build.sh --arch arm64,
# run by qemu-user-static), converged by site.yml like the others; EDGEFED_LAB_ARMHF=1: lab-worker1 is
# the armhf image (a 32-bit userland, as 32-bit Raspberry Pi OS). `make test` runs test-lab-pi, the
# arm64 lab without its idempotence step; `EDGEFED_LAB_ARMHF=1 make test-lab-pi` adds the armhf worker
# (below; docs/lab.md, "ARM nodes", has the costs).
# EDGEFED_LAB_IROHA=1 make lab: the chief also runs irohad (playbooks/iroha.yml) and the ledger services
# write to it; needs `make iroha-peer` (run first when missing) and the image with irohad's runtime
# libraries (molecule/image/build-iroha.sh). Unset, everything here is as without it.

MOLECULE := $(VENV)/bin/molecule
# The image tag follows the build script's content: it is built once, rebuilt when the script changes.
LAB_IMAGE_SCRIPT := molecule/image/$(if $(filter 1,$(EDGEFED_LAB_IROHA)),build-iroha.sh,build.sh)
LAB_IMAGE = $$($(LAB_IMAGE_SCRIPT))
LAB_IROHA_PEER := $(if $(filter 1,$(EDGEFED_LAB_IROHA)),iroha-peer)
LAB_ARM64_IMAGE = $$(molecule/image/build.sh --arch arm64)
# The image of lab-worker2: the arm64 one with EDGEFED_LAB_ARM=1, else the others'.
LAB_WORKER2_IMAGE = $(if $(filter 1,$(EDGEFED_LAB_ARM)),$(LAB_ARM64_IMAGE),$(LAB_IMAGE))
# The image of lab-worker1: the armhf one (32-bit userland) with EDGEFED_LAB_ARMHF=1, else the others'.
LAB_WORKER1_IMAGE = $(if $(filter 1,$(EDGEFED_LAB_ARMHF)),$$(molecule/image/build.sh --arch armhf),$(LAB_IMAGE))
# Emulated ARM containers need the host's qemu handlers to honour setuid (sudo, Ansible's become).
LAB_ARM_BINFMT := $(if $(filter 1,$(EDGEFED_LAB_ARM) $(EDGEFED_LAB_ARMHF)),lab-binfmt)
LAB_IMAGES = EDGEFED_LAB_IMAGE=$(LAB_IMAGE) EDGEFED_LAB_WORKER1_IMAGE=$(LAB_WORKER1_IMAGE) \
	EDGEFED_LAB_WORKER2_IMAGE=$(LAB_WORKER2_IMAGE)
# The "fresh host" variant (systemd, sshd, sudo, python3 only) that tests/ansible converges from nothing.
LAB_FRESH_IMAGE = $$(molecule/image/build.sh --fresh)

.PHONY: lab lab-down test-lab lab-lint lab-image lab-image-fresh lab-engine lab-image-arm lab-arm-smoke lab-binfmt
lab-engine: ## start dockerd if it is not running
	@scripts/lab/ensure-docker.sh

lab-image: lab-engine ## build the lab's systemd image when its script changed
	@$(LAB_IMAGE_SCRIPT) >/dev/null

lab-image-arm: lab-image-arm64 lab-image-armhf ## build the arm64 and armhf lab images (qemu-user-static + binfmt_misc)

lab-binfmt: ## qemu-user-static's aarch64/arm handlers registered, with the C flag (sudo in emulated containers)
	@scripts/lab/binfmt-credentials.sh aarch64 arm

lab-arm-smoke: setup lab-engine ## an ARM container (ARCH=arm64, default, or armhf) installs its wheelhouse offline and trains (times)
	@molecule/image/build.sh --arch $${ARCH:-arm64} >/dev/null
	PYTHON=$(VENV)/bin/python scripts/lab/arm-worker-smoke.sh

lab-image-fresh: lab-engine ## build the fresh-host image (systemd, sshd, python3 only) when its script changed
	@molecule/image/build.sh --fresh >/dev/null

lab: setup lab-image $(LAB_IROHA_PEER) $(LAB_ARM_BINFMT) ## Docker lab: start, deploy site.yml, train, verify, show status
	@scripts/lab/snapshot-source.sh >/dev/null  # deploy the working tree as it is now
	$(LAB_IMAGES) $(MOLECULE) converge
	$(LAB_IMAGES) $(MOLECULE) verify
	$(VENV)/bin/edgefed status -i inventory/lab --known-hosts .lab/known_hosts

lab-down: setup lab-engine ## remove the lab's containers, network, AWS double and keys
	$(MOLECULE) destroy

# The lab's own playbooks and helpers (the roles have their gates in mk/ansible.mk).
lab-lint: setup ## lint the lab's playbooks and helper scripts
	$(VENV)/bin/ansible-lint --offline --profile production molecule/default inventory/lab
	$(VENV)/bin/ruff check scripts/lab molecule/default/files
	$(VENV)/bin/mypy --strict scripts/lab/aws_double.py molecule/default/files/tls_probe.py molecule/default/files/field_cut.py

test-lab: setup lab-lint lab-image $(LAB_IROHA_PEER) $(LAB_ARM_BINFMT) ## the whole molecule scenario (up, verify, idempotence, teardown, down)
	$(LAB_IMAGES) $(MOLECULE) test

# `make test`'s lab (issue 16): the field's shape, the x86_64 chief with lab-worker2 on the arm64 image
# (a Pi under qemu-user): converge with the real site.yml, verify (training across both
# architectures, the 30 s cut of the Pi's link, the pushed model predicting on the Pi), the teardown
# check. Not the idempotence step: on the emulated Pi it alone takes about 7 minutes, more than
# `make test` has; test-ansible-fresh runs site.yml a second time on fresh hosts, and `EDGEFED_LAB_ARM=1
# make test-lab` (EDGEFED_LAB_ARMHF=1 adds the 32-bit worker) is the whole scenario (docs/lab.md).
# EDGEFED_LAB_ARMHF=1 make test-lab-pi: lab-worker1 is the armhf image (32-bit Pi OS) as well; not in
# `make test`, whose 45 minutes it would exceed (docs/lab.md, "ARM nodes").
LAB_PI_ENV = EDGEFED_LAB_ARM=1 EDGEFED_LAB_IMAGE=$(LAB_IMAGE) EDGEFED_LAB_WORKER1_IMAGE=$(LAB_WORKER1_IMAGE) \
	EDGEFED_LAB_WORKER2_IMAGE=$(LAB_ARM64_IMAGE)
.PHONY: test-lab-pi lab-image-arm64 lab-image-armhf
lab-image-arm64: lab-engine lab-binfmt ## build the arm64 lab image when its script changed
	@nice -n 10 molecule/image/build.sh --arch arm64 >/dev/null

lab-image-armhf: lab-engine lab-binfmt ## build the armhf lab image (32-bit userland) when its script changed
	@nice -n 10 molecule/image/build.sh --arch armhf >/dev/null

test-lab-pi: setup lab-lint lab-image lab-image-arm64 $(if $(filter 1,$(EDGEFED_LAB_ARMHF)),lab-image-armhf) lab-binfmt ## the lab with an arm64 Pi worker: converge, verify (cut, predict), teardown (part of make test)
	$(LAB_PI_ENV) $(MOLECULE) destroy
	$(LAB_PI_ENV) sh -c '$(MOLECULE) converge && $(MOLECULE) verify && $(MOLECULE) side-effect'; \
	  rc=$$?; $(LAB_PI_ENV) $(MOLECULE) destroy; exit $$rc

# First in make test's list: the longest target, so it starts in the first free slot.
SLOW_TEST_TARGETS := test-lab-pi $(SLOW_TEST_TARGETS)
