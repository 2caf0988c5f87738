#!/usr/bin/env bash
# The lab image for `EDGEFED_LAB_IROHA=1 make lab`: the base image of build.sh plus the bookworm
# runtime libraries irohad links against (roles/iroha_peer/defaults/main.yml,
# iroha_peer_runtime_packages). The lab's nodes have no package index, so the libraries must be in
# the image, as everything else the roles install with apt is; the default lab keeps build.sh's image
# untouched (this one is a separate repository, edgefed-lab-iroha).
#
# Made from the base image's file tree: exported, the packages installed in a chroot from the Debian
# mirror (as build.sh's debootstrap does), loaded with `docker import`. Tagged with a digest of both
# scripts and the package list: built once, rebuilt when one of them changes. Prints the tag on
# stdout; progress goes to stderr.
#
#   molecule/image/build-iroha.sh          build if missing (and the base image), print the tag
#   molecule/image/build-iroha.sh --tag    print the tag only
#
# Environment: EDGEFED_LAB_IMAGE_REPO (default edgefed-lab; this image is <repo>-iroha). Needs root
# and a running dockerd.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
defaults="$here/../../roles/iroha_peer/defaults/main.yml"
repo=${EDGEFED_LAB_IMAGE_REPO:-edgefed-lab}-iroha

# The YAML list iroha_peer_runtime_packages: its "  - name" lines up to the next top-level key.
mapfile -t packages < <(sed -n '/^iroha_peer_runtime_packages:/,/^[^ ]/p' "$defaults" | sed -n 's/^  - \([a-z0-9.+-]*\)$/\1/p')
((${#packages[@]} > 0)) || { echo "build-iroha.sh: no iroha_peer_runtime_packages in $defaults" >&2; exit 1; }
digest=$( { cat "$here/build.sh" "${BASH_SOURCE[0]}"; printf '%s\n' "${packages[@]}"; } | sha256sum | cut -c1-12)
tag="$repo:$digest"

if [ "${1:-}" = "--tag" ]; then
  echo "$tag"
  exit 0
fi
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "lab image $tag already built" >&2
  echo "$tag"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "build-iroha.sh: run as root (the chroot needs it)" >&2; exit 1; }

base=$("$here/build.sh")
work=$(mktemp -d /var/tmp/edgefed-lab-iroha-image.XXXXXX)
root="$work/root"
container=""
cleanup() {
  umount "$root/proc" "$root/dev" 2>/dev/null || true
  [ -n "$container" ] && docker rm -f "$container" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

echo "unpacking $base into $root" >&2
mkdir -p "$root"
container=$(docker create "$base")
docker export "$container" | tar -x -C "$root"
docker rm "$container" >/dev/null
container=""

# apt in the chroot uses the host's network and resolver (as debootstrap did for build.sh).
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
cp /etc/resolv.conf "$root/etc/resolv.conf"
chroot_run() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }
echo "installing ${packages[*]}" >&2
chroot_run apt-get update -q >&2
chroot_run apt-get install -y -q --no-install-recommends "${packages[@]}" >&2
chroot_run apt-get clean
: > "$root/etc/resolv.conf"
umount "$root/proc" "$root/dev"

echo "importing into docker as $tag" >&2
tar -C "$root" --numeric-owner -c . | docker import \
  --change 'ENV container=docker' \
  --change 'CMD ["/lib/systemd/systemd"]' \
  --message "edgefed lab base + irohad runtime (molecule/image/build-iroha.sh $digest)" \
  - "$tag" >&2
docker image ls "$repo" --format '{{.Repository}}:{{.Tag}}' | grep -v -x -e "$tag" | xargs -r docker rmi >&2 || true
echo "$tag"
