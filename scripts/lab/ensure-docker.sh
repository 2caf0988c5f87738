#!/usr/bin/env bash
# Makes sure the lab's tools are there and a Docker engine answers: installs Debian's docker.io and
# debootstrap when missing, and starts the engine when it is not running (as root; a system with
# systemd as init gets `systemctl start docker`, a container or CI box without it a dockerd of its own,
# logging to /var/log/dockerd.log). Bounded: gives up after 60 s.
set -euo pipefail

as_root() {
  [ "$(id -u)" = 0 ] || { echo "ensure-docker: $1 needs root (run as root, or do it yourself first)" >&2; exit 1; }
}

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
  as_root "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
fi

if docker info >/dev/null 2>&1; then
  exit 0
fi
as_root "starting the Docker engine"
if [ "$(ps -o comm= -p 1 2>/dev/null)" = systemd ] && systemctl start docker 2>/dev/null; then
  echo "ensure-docker: started docker.service" >&2
else
  # Its own session, so it outlives make; it is the machine's engine from now on. It must not keep
  # the caller's other descriptors: a daemon holding a `flock` lock or make's jobserver pipe would
  # hold them for as long as it runs.
  (
    for fd in /proc/self/fd/*; do
      fd=${fd##*/}
      [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-" 2>/dev/null
    done
    exec setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null
  ) &
  echo "ensure-docker: started dockerd (log: /var/log/dockerd.log)" >&2
fi
for _ in $(seq 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "ensure-docker: the Docker engine did not answer within 60 s; see /var/log/dockerd.log" >&2
exit 1
