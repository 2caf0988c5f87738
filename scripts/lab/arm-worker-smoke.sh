#!/usr/bin/env bash
# The ARM pieces of issue 16 without the full lab: one container of the arm64 (or armhf) lab image
# (qemu-user), the role's own wheelhouse.py makes the wheelhouse for it on the host, the container
# installs it offline (pip --no-index, as the role does), and its worker trains against a chief on
# the host. Prints the measured times. Container pi-arm-smoke on the docker bridge; removed at the end.
# armhf (32-bit userland) takes the role's Debian path: numpy, cffi and scikit-learn from the image's
# Debian packages (a venv with system site packages), the rest as armv7l or pure wheels without deps.
#
#   ARCH=arm64|armhf scripts/lab/arm-worker-smoke.sh [WORKDIR]   (root, dockerd, the lab image of ARCH)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$(mktemp -d /var/tmp/pi-arm-smoke.XXXXXX)}
py=${PYTHON:-python3}
name=pi-arm-smoke
arch=${ARCH:-arm64}
image=$("$repo/molecule/image/build.sh" --arch "$arch" --tag)
docker image inspect "$image" >/dev/null || { echo "arm-worker-smoke: build $image first (molecule/image/build.sh --arch $arch)" >&2; exit 1; }
stamp() { date +%s.%N; }
# Emulated steps run niced inside the container (docker exec does not inherit the caller's nice).
took() { awk -v a="$1" -v b="$(stamp)" 'BEGIN { printf "%.1f", b - a }'; }
cleanup() { docker rm -f "$name" >/dev/null 2>&1 || true; [ -n "${chief_pid:-}" ] && kill "$chief_pid" 2>/dev/null || true; }
trap cleanup EXIT

t=$(stamp)
"$py" "$repo/roles/edgefed_install/files/wheelhouse.py" wheel "$repo" "$work/wheelhouse/edgefed" >/dev/null
wheel=$(ls "$work"/wheelhouse/edgefed/edgefed-*.whl | tail -1)
if [ "$arch" = arm64 ]; then machine=aarch64; else machine=armv7l; fi
tags=(--platform="manylinux2014_$machine")
for minor in $(seq 36 -1 17); do tags+=(--platform="manylinux_2_${minor}_$machine"); done
if [ "$arch" = arm64 ]; then
  what=("$wheel[demo]"); site=(); requirement="edgefed[demo]"
else  # the role's defaults for a 32-bit userland (roles/edgefed_install/defaults/main.yml)
  what=(--no-deps "$wheel" "cryptography>=41,<46" rich markdown-it-py mdurl pygments)
  site=(--system-site-packages); requirement=edgefed
fi
"$py" "$repo/roles/edgefed_install/files/wheelhouse.py" download "$work/wheelhouse/$arch" --python-version 3.11 \
  "${tags[@]}" "${what[@]}" >/dev/null
echo "$machine wheelhouse: $(took "$t") s, $(du -sh "$work/wheelhouse/$arch" | cut -f1)"

docker rm -f "$name" >/dev/null 2>&1 || true
t=$(stamp)
docker run -d --name "$name" --hostname worker1 --cgroupns host -v /sys/fs/cgroup:/sys/fs/cgroup:ro \
  --tmpfs /run --tmpfs /run/lock --tmpfs /tmp --stop-signal SIGRTMIN+3 "$image" /lib/systemd/systemd >/dev/null
# (is-system-running exits non-zero when degraded: the unprivileged container's usual state)
until [[ $(docker exec "$name" systemctl is-system-running 2>/dev/null || true) =~ ^(running|degraded)$ ]]; do
  sleep 1
done
echo "$arch container boot (systemd under qemu): $(took "$t") s"
docker exec -i "$name" python3 - < "$repo/roles/edgefed_install/files/platform_probe.py"

t=$(stamp)
docker exec "$name" mkdir -p /opt/edgefed/wheelhouse
docker cp "$work/wheelhouse/$arch/." "$name:/opt/edgefed/wheelhouse/"
docker cp "$wheel" "$name:/opt/edgefed/wheelhouse/"
echo "wheelhouse copied into the container: $(took "$t") s"
# As the role does with edgefed_install_byte_compile false: no ensurepip (under qemu on a loaded
# machine, `python3 -m venv` with it took 20 minutes and more), pip from Debian's wheel, nothing compiled.
t=$(stamp)
docker exec "$name" nice -n 10 python3 -m venv "${site[@]}" --without-pip /opt/edgefed/venv
echo "python3 -m venv --without-pip: $(took "$t") s (load: $(cut -d' ' -f1-3 /proc/loadavg))"
t=$(stamp)
docker exec "$name" sh -c 'exec nice -n 10 /opt/edgefed/venv/bin/python "$(ls /usr/share/python-wheels/pip-*.whl | tail -1)/pip" \
  install -q --disable-pip-version-check --no-index --no-compile --find-links /usr/share/python-wheels pip setuptools'
echo "pip and setuptools from Debian's wheels, --no-compile: $(took "$t") s (load: $(cut -d' ' -f1-3 /proc/loadavg))"
t=$(stamp)
docker exec "$name" nice -n 10 /opt/edgefed/venv/bin/python -m pip install -q --disable-pip-version-check --no-index \
  --no-compile --find-links /opt/edgefed/wheelhouse "$requirement"
echo "offline install of the wheelhouse on $arch, --no-compile: $(took "$t") s (load: $(cut -d' ' -f1-3 /proc/loadavg))"

# What not byte-compiling costs a service: its user cannot write __pycache__ into root's venv, so every
# start compiles in memory what it imports (timed before anything ran as root, which would write them).
docker exec "$name" useradd --system --no-create-home smoke
imports='import edgefed.node, edgefed.trainers.softmax, edgefed.trainers.data, sklearn.datasets'
t=$(stamp)
docker exec --user smoke "$name" nice -n 10 /opt/edgefed/venv/bin/python -c "$imports"
echo "a worker's imports as an unprivileged user, nothing compiled: $(took "$t") s (load: $(cut -d' ' -f1-3 /proc/loadavg))"

# PKI and configs: a chief on the host (docker bridge address), worker1 in the container.
host_ip=$(docker network inspect bridge --format '{{(index .IPAM.Config 0).Gateway}}')
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("0.0.0.0", 0)); print(s.getsockname()[1])')
export PYTHONPATH=$repo
"$py" - "$work" "$host_ip" "$port" <<'PY'
import sys
from pathlib import Path
from edgefed import pki
from edgefed.config import dump_config
work, host, port = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
root = work / "pki"
if not (root / "ca.crt").exists():
    pki.init_ca(root)
    pki.issue_node(root, "chief", [host])
    pki.issue_node(root, "worker1")
fed = {"public_ip": host, "public_port": port, "private_ip": "0.0.0.0", "private_port": port, "rounds": 3,
       "interval_steps": 20, "round_timeout": 600.0, "wait_time": 600.0, "reconnect_timeout": 600.0}
(work / "chief.toml").write_text(dump_config({
    "node": {"name": "chief", "role": "chief", "pki_dir": str(root), "state_dir": str(work / "state/chief")},
    "federation": {**fed, "expected_workers": ["worker1"]}, "ledger": {"enabled": False}}))
(work / "worker1.toml").write_text(dump_config({
    "node": {"name": "worker1", "role": "worker", "pki_dir": "/etc/edgefed/pki", "state_dir": "/var/lib/edgefed"},
    "federation": fed, "ledger": {"enabled": False}}))
PY
docker exec "$name" mkdir -p /etc/edgefed/pki/nodes /var/lib/edgefed
docker cp "$work/pki/ca.crt" "$name:/etc/edgefed/pki/ca.crt"
docker cp "$work/pki/nodes/worker1" "$name:/etc/edgefed/pki/nodes/worker1"
docker cp "$work/worker1.toml" "$name:/etc/edgefed/edgefed.toml"

t=$(stamp)
"$py" -m edgefed chief --config "$work/chief.toml" --exit-when-done --progress-jsonl > "$work/chief.jsonl" \
  2> "$work/chief.log" &
chief_pid=$!
docker exec "$name" nice -n 10 /opt/edgefed/venv/bin/edgefed worker --config /etc/edgefed/edgefed.toml --exit-when-done \
  > "$work/worker1.log" 2>&1
wait "$chief_pid"; chief_pid=
echo "3 rounds with the $arch worker (edgefed worker start to exit): $(took "$t") s (load: $(cut -d' ' -f1-3 /proc/loadavg))"
cat "$work/chief.jsonl"
docker exec "$name" cat /var/lib/edgefed/status/worker.json
echo

if [ "${ARM_SMOKE_COMPARE:-0}" = 1 ]; then  # what the role's default (byte-compiling) would have cost
  t=$(stamp)
  docker exec --user smoke "$name" nice -n 10 /opt/edgefed/venv/bin/python -c "$imports"
  echo "the same imports after the worker ran as root (its imports compiled): $(took "$t") s"
  t=$(stamp)
  docker exec "$name" nice -n 10 /opt/edgefed/venv/bin/python -m compileall -q /opt/edgefed/venv/lib >/dev/null || true
  echo "compileall of the whole venv (what --no-compile saved): $(took "$t") s (load: $(cut -d' ' -f1-3 /proc/loadavg))"
  t=$(stamp)
  docker exec "$name" nice -n 10 python3 -m venv "${site[@]}" /tmp/venv-ensurepip
  echo "python3 -m venv with ensurepip (byte-compiles pip and setuptools): $(took "$t") s (load: $(cut -d' ' -f1-3 /proc/loadavg))"
fi
