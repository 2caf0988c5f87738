# The MPI transport (docs/mpi.md): OpenMPI from Debian, and mpi4py built from PyPI against it into
# the venv. Installed when missing; the build takes a few minutes on a Pi.
MPI4PY_VERSION := 4.1.2
.PHONY: mpi-system-packages

mpi-system-packages: ## install Debian's OpenMPI (mpirun, mpicc) when missing
	@if ! command -v mpirun >/dev/null || ! command -v mpicc >/dev/null; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	    openmpi-bin libopenmpi-dev; \
	fi

# Order-only: the phony package check must not make the build run again on every setup.
$(VENV)/.mpi4py-$(MPI4PY_VERSION): $(VENV)/.installed | mpi-system-packages
	$(PIP) install --quiet --no-binary mpi4py 'mpi4py==$(MPI4PY_VERSION)'
	touch $@

SETUP_TARGETS += mpi-system-packages $(VENV)/.mpi4py-$(MPI4PY_VERSION)

# The MPI lab (molecule/mpi, docs/lab.md): chief + 2 workers as containers of the lab image on their own
# network (edgefed-mpi, 172.30.78.0/24) and state directory (.lab-mpi/), so it can run beside the
# default lab; site.yml with edgefed_transport: mpi, the job across the containers, verify,
# idempotence, the teardown check.
.PHONY: test-lab-mpi
test-lab-mpi: setup lab-image ## the MPI lab scenario (molecule/mpi): site.yml with mpirun across containers, verify, idempotence (part of make test)
	$(VENV)/bin/ansible-lint --offline --profile production molecule/mpi inventory/lab-mpi
	EDGEFED_LAB_IMAGE=$(LAB_IMAGE) $(MOLECULE) test -s mpi

# Part of `make test` (issue 17): scripts/test-lanes.sh hands the slow targets to whichever lane frees first, in
# the order listed (test-lab-pi first, then fresh, hosts, this one, status-lab: longest first).
# `molecule test -s mpi` on the shared 2-core machine: 1592 s at load 7-16 before the wheels went as
# one archive, 1148 s at load 8-11 after (docs/lab.md, The MPI lab).
SLOW_TEST_TARGETS += test-lab-mpi

# The benchmark (docs/mpi.md, Benchmark): MPI vs edgefed's sockets vs Flower at bench_flower's points;
# part of `make bench`. The seed's table (make bench-seed-table) has its MPI row as --modes mpi.
BENCH_MPI_ARGS ?=
.PHONY: bench-mpi
bench-mpi: setup $(FLWR_VENV)/.installed ## one FedAvg round: MPI vs edgefed TLS and plain TCP vs Flower
	$(PY) bench/bench_mpi.py --flwr-python $(FLWR_VENV)/bin/python $(BENCH_MPI_ARGS)

bench: bench-mpi
