#!/bin/sh
# Give the host's qemu-user binfmt_misc handlers the C flag, so setuid binaries (sudo, which Ansible's
# `become` runs) work inside the emulated ARM lab containers. Debian's qemu-user-static registers
# qemu-aarch64 and qemu-arm with flags PF only; without C, qemu-user runs a setuid binary with the
# caller's credentials and sudo stops with "effective uid is not 0". A real Pi runs sudo natively.
#
# C (credentials from the binary, implies O) is the setting Docker Desktop and the qemu-user-static
# container image use. It lasts until the next boot or `update-binfmts --disable/--enable qemu-aarch64`,
# which restores Debian's registration. Idempotent: a handler that has C already is left as it is.
# Installs qemu-user-static and registers its handlers first when the machine has none.
set -eu
dir=/proc/sys/fs/binfmt_misc
[ "$(id -u)" = 0 ] || { echo "binfmt-credentials: run as root (it writes $dir)" >&2; exit 1; }

# "7f454c46" -> "\x7f\x45\x4c\x46", the escaped form the register file takes.
escape() { printf '%s' "$1" | sed 's/../\\x&/g'; }

# A fresh machine (CI) may have no qemu-user-static yet, or no binfmt_misc mounted where no systemd
# runs as init to mount it: install Debian's packages and register their handlers.
for name in "$@"; do
  grep -qs '^enabled' "$dir/qemu-$name" && continue
  if [ ! -x "/usr/libexec/qemu-binfmt/$name-binfmt-P" ] && ! command -v "qemu-$name-static" >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends qemu-user-static binfmt-support >/dev/null 2>&1 \
      || { apt-get update -qq && apt-get install -y -qq --no-install-recommends qemu-user-static binfmt-support >/dev/null; }
  fi
  [ -e "$dir/register" ] || mount -t binfmt_misc binfmt_misc "$dir"
  update-binfmts --enable "qemu-$name" || true  # judged just below
done

for name in "$@"; do
  entry="$dir/qemu-$name"
  if ! grep -qs '^enabled' "$entry"; then
    echo "binfmt-credentials: no enabled binfmt handler qemu-$name (apt-get install qemu-user-static)" >&2
    exit 1
  fi
  flags=$(awk '$1 == "flags:" {print $2}' "$entry")
  case "$flags" in *C*) continue ;; esac
  magic=$(awk '$1 == "magic" {print $2}' "$entry")
  mask=$(awk '$1 == "mask" {print $2}' "$entry")
  offset=$(awk '$1 == "offset" {print $2}' "$entry")
  interpreter=$(awk '$1 == "interpreter" {print $2}' "$entry")
  # Keep Debian's P (argv[0]) and F (interpreter opened now, usable inside containers); add O and C.
  base=":qemu-$name:M:$offset:$(escape "$magic"):$(escape "$mask"):$interpreter"
  echo -1 >"$entry"
  if ! printf '%s' "$base:POCF" >"$dir/register"; then
    printf '%s' "$base:$flags" >"$dir/register"  # put Debian's registration back: ARM binaries still run
    echo "binfmt-credentials: the kernel refused qemu-$name with flags POCF; left it with $flags" >&2
    exit 1
  fi
  echo "binfmt-credentials: qemu-$name re-registered with flags POCF (was $flags)" >&2
done
