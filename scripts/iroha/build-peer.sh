#!/usr/bin/env bash
# Builds a real Hyperledger Iroha 1.6 peer (irohad) on Debian bookworm, once per machine (issue 21).
#
# The pristine upstream archives come from ../shared/third_party (checked against its SHA256SUMS);
# nothing upstream is copied into the repository. The project's own patches for bookworm's library
# versions (scripts/iroha/patches) are applied to a throw-away source tree under $IROHA_BUILD_ROOT,
# and the finished binary lands in $IROHA_CACHE/<key>/bin/irohad, where <key> hashes the archives'
# checksums, the patches and the build recipe below: a second run with the same inputs does nothing.
#
#   scripts/iroha/build-peer.sh               install build dependencies, build if needed
#   scripts/iroha/build-peer.sh --print-path  print the cached irohad for the current inputs, or fail
#
# The compile runs at the lowest CPU and I/O priority (the machine is shared), IROHA_JOBS at a time.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
third_party=${IROHA_THIRD_PARTY:-$repo/../shared/third_party}
cache_root=${IROHA_CACHE:-/var/cache/edgefed-iroha}
build_root=${IROHA_BUILD_ROOT:-/var/tmp/edgefed-iroha-build}
jobs=${IROHA_JOBS:-2}

iroha_src=iroha-1.6.0
ed25519_src=iroha-ed25519-2.0.1
rxcpp_src=RxCpp-4.1.1
archives=("$iroha_src.tar.gz" "$ed25519_src.tar.gz" "$rxcpp_src.tar.gz")

# Bookworm packages irohad needs to build (their runtime libraries come with them).
build_deps=(g++ cmake ninja-build pkg-config patch
  libboost-dev libboost-filesystem-dev libboost-iostreams-dev libboost-thread-dev
  libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc libabsl-dev libre2-dev
  libc-ares-dev libgflags-dev rapidjson-dev libfmt-dev libspdlog-dev libsoci-dev libpq-dev
  librocksdb-dev prometheus-cpp-dev libcivetweb-dev nlohmann-json3-dev libssl-dev zlib1g-dev)

# Part of the cache key: changing a flag here means a different binary.
ed25519_flags=(-DCMAKE_BUILD_TYPE=Release -DHUNTER_ENABLED=OFF -DEDIMPL=ref10 -DHASH=sha3_brainhub
  -DRANDOM=dev_urandom -DBUILD=STATIC -DTESTING=OFF -DBENCHMARKING=OFF)
irohad_flags=(-DCMAKE_BUILD_TYPE=Release -DTESTING=OFF -DUSE_BURROW=OFF -DUSE_LIBURSA=OFF
  -DBENCHMARKING=OFF -DFUZZING=OFF)

fail() { echo "iroha-peer: $*" >&2; exit 1; }

check_archives() {
  [[ -d $third_party ]] || fail "no $third_party: the Iroha sources are read from ../shared/third_party beside the clone (see docs/ledger.md)"
  local f
  for f in SHA256SUMS "${archives[@]}"; do
    [[ -r $third_party/$f ]] || fail "$third_party/$f is missing: the Iroha sources are read from ../shared/third_party beside the clone (see docs/ledger.md)"
  done
  (cd "$third_party" && sha256sum --quiet --strict -c SHA256SUMS >/dev/null 2>&1) \
    || fail "$third_party does not match its SHA256SUMS: refusing to build from altered archives"
}

cache_key() {
  {
    cat "$third_party/SHA256SUMS"
    sha256sum "$here"/patches/*.patch | awk '{print $1}'
    echo "ed25519: ${ed25519_flags[*]}"
    echo "irohad: ${irohad_flags[*]}"
  } | sha256sum | cut -c1-16
}

install_build_deps() {
  local missing=() p
  for p in "${build_deps[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  echo "iroha-peer: installing ${#missing[@]} build dependencies from Debian: ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

low_priority() { nice -n 19 ionice -c3 "$@"; }

# The source tree and build directories live in $build_root/tree and survive a failed build: when
# its pristine sources are the same archives and the patches applied so far are the first of the
# current ones, only the new patches are applied and ninja rebuilds what they touch (a link fix
# costs seconds, not another 40 minutes). Anything else starts from a fresh unpack.
prepare_tree() {
  local work=$1 p applied=() current=()
  for p in "$here"/patches/*.patch; do current+=("$(sha256sum "$p" | cut -c1-64) $(basename "$p")"); done
  if [[ -f $work/sources && -f $work/applied ]] && cmp -s "$work/sources" "$third_party/SHA256SUMS"; then
    mapfile -t applied <"$work/applied"
    local i
    for i in "${!applied[@]}"; do
      [[ ${applied[$i]} == "${current[$i]:-}" ]] || { applied=(); rm -rf "$work"; break; }
    done
  else
    rm -rf "$work"
  fi
  if [[ ! -d $work ]]; then
    applied=()
    mkdir -p "$work/src"
    local a
    for a in "${archives[@]}"; do tar -xzf "$third_party/$a" -C "$work/src"; done
    cp "$third_party/SHA256SUMS" "$work/sources"
    : >"$work/applied"
  fi
  for p in "${current[@]:${#applied[@]}}"; do
    patch -d "$work/src/$iroha_src" -p1 --forward --batch --quiet <"$here/patches/${p#* }" \
      || fail "patch ${p#* } does not apply to $iroha_src"
    echo "$p" >>"$work/applied"
  done
}

build() {
  local key=$1 work=$build_root/tree out=$cache_root/$1
  echo "iroha-peer: building irohad $key in $work (log: $work/build.log), -j$jobs at low priority"
  prepare_tree "$work"
  {
    low_priority cmake -S "$work/src/$ed25519_src" -B "$work/build-ed25519" -G Ninja \
      "${ed25519_flags[@]}" -DCMAKE_INSTALL_PREFIX="$work/prefix"
    low_priority ninja -C "$work/build-ed25519" -j "$jobs" install
    low_priority cmake -S "$work/src/$iroha_src" -B "$work/build-iroha" -G Ninja "${irohad_flags[@]}" \
      -DCMAKE_PREFIX_PATH="$work/prefix" -Drxcpp_INCLUDE_DIR="$work/src/$rxcpp_src/Rx/v2/src"
    low_priority ninja -C "$work/build-iroha" -j "$jobs" irohad
  } >"$work/build.log" 2>&1 || fail "the build failed; the last lines of $work/build.log: $(tail -n 5 "$work/build.log" | tr '\n' ' ')"

  rm -rf "$out.partial"
  mkdir -p "$out.partial/bin"
  install -m 0755 -s "$work/build-iroha/bin/irohad" "$out.partial/bin/irohad"
  {
    echo "key $key"
    echo "built $(date -u +%FT%TZ) on $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "sources:"; sed 's/^/  /' "$third_party/SHA256SUMS"
    echo "patches:"; (cd "$here/patches" && sha256sum ./*.patch | sed 's/^/  /')
    echo "irohad: ${irohad_flags[*]}"
    echo "ed25519: ${ed25519_flags[*]}"
  } >"$out.partial/BUILD-INFO"
  mv "$out.partial" "$out"
  [[ ${IROHA_KEEP_BUILD:-0} == 1 ]] || rm -rf "$work"
}

main() {
  check_archives
  local key
  key=$(cache_key)
  if [[ ${1:-} == --print-path ]]; then
    [[ -x $cache_root/$key/bin/irohad ]] || fail "irohad $key is not built yet: run make iroha-peer"
    echo "$cache_root/$key/bin/irohad"
    return 0
  fi
  install_build_deps
  if [[ -x $cache_root/$key/bin/irohad ]]; then
    echo "iroha-peer: irohad $key already built: $cache_root/$key/bin/irohad"
    return 0
  fi
  command -v ionice >/dev/null || fail "ionice (util-linux) is missing"
  build "$key"
  echo "iroha-peer: irohad built: $cache_root/$key/bin/irohad"
}

main "$@"
