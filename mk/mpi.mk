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
