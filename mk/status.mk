# `edgefed status` tests: a real OpenSSH server (sshd started by the tests), iproute2 for the
# chief's network namespace and iptables for its nat table. Installed from Debian when missing.
.PHONY: status-system-tools test-status-lab

status-system-tools: ## install sshd, ssh-keygen, iproute2, iptables when missing (for the status tests)
	@if [ ! -x /usr/sbin/sshd ] || ! command -v ssh-keygen >/dev/null || ! command -v ip >/dev/null \
	    || ! command -v iptables >/dev/null; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	    openssh-server openssh-client iproute2 iptables; \
	fi

SETUP_TARGETS += status-system-tools

# The status checks against real systemd: containers of the lab image (lab-image builds it and
# starts the Docker engine; a build in the test would race the one `make test` runs beside it).
test-status-lab: setup lab-image ## edgefed status and doctor against real systemd in lab containers
	$(PY) -m pytest -m lab tests/integration/test_status_lab.py tests/integration/test_doctor_lab.py

SLOW_TEST_TARGETS += test-status-lab
