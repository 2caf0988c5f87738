#!/bin/sh
# Makes DEST hold the .deb of each NAME:ARCH=VERSION given (apt-get download, on the controller).
#   fetch-debs.sh DEST [--check] NAME:ARCH=VERSION...
# Prints {"changed": bool, "files": [the .deb file names, in DEST]}; --check downloads nothing.
set -eu
dest=$1
shift
check=false
if [ "${1:-}" = "--check" ]; then check=true; shift; fi
mkdir -p "$dest"
cd "$dest"
changed=false
files=""
for spec in "$@"; do
  name=${spec%%:*}
  rest=${spec#*:}
  arch=${rest%%=*}
  version=${rest#*=}
  # apt's file name: the epoch's ':' is written %3a.
  file="${name}_$(printf '%s' "$version" | sed 's/:/%3a/')_${arch}.deb"
  if [ ! -f "$file" ]; then
    changed=true
    if [ "$check" = false ]; then
      apt-get download -q "$name:$arch=$version" >&2
      [ -f "$file" ] || { echo "fetch-debs.sh: apt-get download $spec made no $file" >&2; exit 1; }
    fi
  fi
  files="$files${files:+, }\"$file\""
done
printf '{"changed": %s, "files": [%s]}\n' "$changed" "$files"
