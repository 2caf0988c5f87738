#!/usr/bin/env bash
# Builds the lab's base image: a minimal Debian bookworm root made by debootstrap and loaded with
# `docker import` (no registry is reachable, so nothing can be pulled). Everything a node needs at
# converge time is baked in here, because the containers cannot rely on a package index.
#
# The image is tagged with a digest of this file, so it is built once and rebuilt only when this
# script changes. Prints the tag on stdout; progress goes to stderr.
#
#   molecule/image/build.sh                    build if missing, print the tag
#   molecule/image/build.sh --tag              print the tag only (no build)
#   molecule/image/build.sh --arch arm64 [--tag]   the same for a Raspberry Pi-like node: a foreign
#                                              Debian architecture (arm64, or armhf: 32-bit userland),
#                                              run by qemu-user-static through binfmt_misc
#
# Each architecture has its own repository (edgefed-lab, edgefed-lab-arm64, edgefed-lab-armhf), so
# building one never evicts another's cache.
#
#   molecule/image/build.sh --fresh    the "fresh host" variant (edgefed-lab-fresh): only systemd,
#                                      sshd, sudo and python3, like a cloud image or a new Pi OS Lite;
#                                      everything else site.yml must install itself with apt
#
# Environment: EDGEFED_LAB_MIRROR (default http://deb.debian.org/debian), EDGEFED_LAB_IMAGE_REPO
# (default edgefed-lab, or edgefed-lab-fresh with --fresh). Needs root, debootstrap and a running dockerd.
set -euo pipefail

arch=amd64
tag_only=false
fresh=false
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag_only=true ;;
    --fresh) fresh=true ;;
    --arch) arch=${2:?--arch needs amd64, arm64 or armhf}; shift ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
base_repo=${EDGEFED_LAB_IMAGE_REPO:-$([ "$fresh" = true ] && echo edgefed-lab-fresh || echo edgefed-lab)}
case "$arch" in
  amd64) repo=$base_repo; docker_platform=linux/amd64; qemu= ;;
  arm64) repo=$base_repo-arm64; docker_platform=linux/arm64; qemu=aarch64 ;;
  armhf) repo=$base_repo-armhf; docker_platform=linux/arm/v7; qemu=arm ;;
  *) echo "build.sh: --arch must be amd64, arm64 or armhf, not $arch" >&2; exit 2 ;;
esac
mirror=${EDGEFED_LAB_MIRROR:-http://deb.debian.org/debian}
script_digest=$( (cat "${BASH_SOURCE[0]}"; echo "$arch $fresh") | sha256sum | cut -c1-12)
tag="$repo:$script_digest"

# What the nodes need: systemd as PID 1, sshd for Ansible, Python with venv for the edgefed install,
# iptables + netfilter-persistent for the port-forward role, python3-apt and debconf-utils for
# Ansible's apt and debconf modules, and small tools the verifier uses (ss, nc, openssl).
packages=(
  systemd systemd-sysv dbus
  openssh-server sudo ca-certificates
  python3 python3-venv python3-apt debconf-utils
  iptables iptables-persistent netfilter-persistent
  iproute2 procps openssl netcat-openbsd less
)
# 32-bit Pi OS: PyPI has no armv7l wheels of numpy, cffi or scikit-learn, so the install role takes
# Debian's (a venv with system site packages). The lab has no package index at converge time, so they
# are baked in here, where a real Pi would apt-get them.
# python3-ply is named because debootstrap's resolver reads Depends by package name and never Provides:
# python3-pycparser (from python3-cffi) depends on the virtual python3-ply-lex-3.10 and
# python3-ply-yacc-3.10, which python3-ply provides, so without it dpkg leaves pycparser and cffi
# unconfigured and debootstrap fails after five attempts (docs/lab.md, "ARM nodes").
[ "$arch" = armhf ] && packages+=(python3-numpy python3-cffi python3-ply python3-sklearn)
if [ "$fresh" = true ]; then
  # A fresh host: no python3-apt, no venv module, no iptables; site.yml installs what it needs.
  packages=(systemd systemd-sysv dbus openssh-server sudo ca-certificates python3)
fi

if [ "$tag_only" = true ]; then
  echo "$tag"
  exit 0
fi

if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "lab image $tag already built" >&2
  docker tag "$tag" "$repo:current"
  echo "$tag"
  exit 0
fi

[ "$(id -u)" = 0 ] || { echo "build.sh: run as root (debootstrap needs it)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "build.sh: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
if [ -n "$qemu" ] && ! grep -qs '^enabled' "/proc/sys/fs/binfmt_misc/qemu-$qemu"; then
  # The F flag (Debian's default) opens the interpreter at registration, so it also works inside
  # the chroot and the containers, which have no qemu binary of their own.
  echo "build.sh: no binfmt handler for $qemu (apt-get install qemu-user-static binfmt-support;" \
       "then update-binfmts --enable qemu-$qemu)" >&2
  exit 1
fi

work=$(mktemp -d /var/tmp/edgefed-lab-image.XXXXXX)
trap 'umount "$work/root/proc" "$work/root/sys" 2>/dev/null || true; rm -rf "$work"' EXIT
root="$work/root"

echo "debootstrap bookworm ($arch) into $root (a few minutes; more under emulation)" >&2
# iptables-persistent asks whether to save the current rules; answer for it.
# On failure its log goes with the temporary root: show its end first (the cause is there, not on the console).
if ! DEBIAN_FRONTEND=noninteractive debootstrap --variant=minbase --arch="$arch" \
  --include="$(IFS=,; echo "${packages[*]}")" \
  bookworm "$root" "$mirror" >&2; then
  echo "build.sh: debootstrap failed; the end of $root/debootstrap/debootstrap.log:" >&2
  tail -n 30 "$root/debootstrap/debootstrap.log" >&2 2>/dev/null || true
  exit 1
fi

chroot_run() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

# Each container gets its own identity at boot: an empty machine-id (systemd fills it) and host keys
# generated by the unit below instead of keys shared by every container made from this image.
: > "$root/etc/machine-id"
rm -f "$root"/etc/ssh/ssh_host_*
cat > "$root/etc/systemd/system/ssh-hostkeys.service" <<'UNIT'
[Unit]
Description=Generate SSH host keys on first boot
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
UNIT
chroot_run systemctl enable ssh-hostkeys.service ssh.service >&2

# iptables-persistent's postinst saved the rules of the build host's network namespace (the
# chroot shares it); a node must start with an empty rule set of its own.
rm -f "$root"/etc/iptables/rules.v4 "$root"/etc/iptables/rules.v6
# The fresh variant installs packages at converge time: give it the same mirror's sources.
if [ "$fresh" = true ]; then
  echo "deb $mirror bookworm main" > "$root/etc/apt/sources.list"
fi

# The login user mirrors Debian's cloud images (`admin`, passwordless sudo), so Ansible's `become`
# is exercised as on the real chief. Key-only logins (the lab installs its key after start), no root.
chroot_run useradd --create-home --shell /bin/bash --user-group admin
echo 'admin ALL=(ALL) NOPASSWD:ALL' > "$root/etc/sudoers.d/90-admin"
chmod 0440 "$root/etc/sudoers.d/90-admin"
install -d -m 0700 -o "$(chroot_run id -u admin)" -g "$(chroot_run id -g admin)" "$root/home/admin/.ssh"
cat > "$root/etc/ssh/sshd_config.d/lab.conf" <<'CONF'
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
CONF

# Units that cannot work in an unprivileged container only add noise and failed states.
for unit in systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
            systemd-remount-fs.service sys-kernel-config.mount sys-kernel-debug.mount \
            sys-kernel-tracing.mount dev-hugepages.mount getty.target console-getty.service \
            systemd-firstboot.service systemd-modules-load.service; do
  chroot_run systemctl mask "$unit" >&2
done

# The package lists stay (Ansible's apt module reads them to see what is installed); the downloaded
# archives do not. A fresh host has no lists yet, as after a cloud image's first boot.
rm -rf "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
if [ "$fresh" = true ]; then
  rm -rf "$root"/var/lib/apt/lists/*
fi

echo "importing into docker as $tag" >&2
tar -C "$root" --numeric-owner -c . | docker import --platform "$docker_platform" \
  --change 'ENV container=docker' \
  --change 'CMD ["/lib/systemd/systemd"]' \
  --message "edgefed lab base $arch (molecule/image/build.sh $script_digest fresh=$fresh)" \
  - "$tag" >&2
docker tag "$tag" "$repo:current"
# Older builds of this script are dead weight (about 200 MB each).
docker image ls "$repo" --format '{{.Repository}}:{{.Tag}}' | grep -v -x -e "$tag" -e "$repo:current" \
  | xargs -r docker rmi >&2 || true
echo "$tag"
