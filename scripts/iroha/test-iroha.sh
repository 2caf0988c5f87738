#!/usr/bin/env bash
# `make test-iroha`: PYTHON ARGS... runs with a fresh single-peer irohad (tests/iroha/peer.py sets
# IROHA_TORII, IROHA_ADMIN_ACCOUNT and IROHA_ADMIN_KEY), and the peer is stopped and its state removed
# afterwards. irohad listens on every interface (hard-coded upstream), so as root the whole run goes
# into a network namespace of its own with nothing but loopback; elsewhere it runs as it is.
# EDGEFED_IROHA_REQUIRED=1 turns "no irohad built" into a failure instead of a skip.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
(($# >= 1)) || { echo "usage: $0 PYTHON [ARGS...]" >&2; exit 2; }
python=$1
export EDGEFED_IROHA_REQUIRED=1
run=("$python" -m tests.iroha.peer run -- "$@")

if [[ $(id -u) == 0 ]] && command -v ip >/dev/null; then
  netns=edgefed-iroha-$$
  ip netns add "$netns"
  trap 'ip netns delete "$netns"' EXIT
  ip -n "$netns" link set lo up
  echo "test-iroha: running in network namespace $netns (loopback only)"
  ip netns exec "$netns" "${run[@]}"
else
  echo "test-iroha: not root: irohad's ports are open on every interface while the tests run"
  "${run[@]}"
fi
