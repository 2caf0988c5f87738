#!/bin/sh
# Makes DEST hold the .deb of each NAME:ARCH=VERSION given (apt-get download, on the controller).
#   fetch-debs.sh DEST [--check] NAME:ARCH=VERSION...
# and packs them into DEST/bundles/SHA.tar (named after the list: one file to copy to a node).
# Prints {"changed": bool, "files": [the .deb file names, in DEST], "archive": "DEST/bundles/SHA.tar"};
# --check downloads and packs nothing.
set -eu
dest=$1
shift
check=false
if [ "${1:-}" = "--check" ]; then check=true; shift; fi
mkdir -p "$dest"
cd "$dest"
files=""
missing=""
for spec in "$@"; do
  name=${spec%%:*}
  rest=${spec#*:}
  arch=${rest%%=*}
  version=${rest#*=}
  # apt's file name: the epoch's ':' is written %3a.
  file="${name}_$(printf '%s' "$version" | sed 's/:/%3a/')_${arch}.deb"
  [ -f "$file" ] || missing="$missing $spec"
  files="$files${files:+, }\"$file\""
done
changed=false
if [ -n "$missing" ]; then
  changed=true
  # One apt-get for all of them: it resolves and fetches in parallel.
  # shellcheck disable=SC2086
  [ "$check" = true ] || apt-get download -q $missing >&2
fi
if [ "$check" = false ]; then
  for spec in "$@"; do
    name=${spec%%:*}; rest=${spec#*:}; arch=${rest%%=*}; version=${rest#*=}
    file="${name}_$(printf '%s' "$version" | sed 's/:/%3a/')_${arch}.deb"
    [ -f "$file" ] || { echo "fetch-debs.sh: apt-get download $spec made no $file" >&2; exit 1; }
  done
fi
archive="$dest/bundles/$(printf '%s\n' "$@" | sha1sum | cut -c1-12).tar"
if [ ! -f "$archive" ]; then
  changed=true
  if [ "$check" = false ]; then
    mkdir -p "$dest/bundles"
    list=""
    for spec in "$@"; do
      name=${spec%%:*}; rest=${spec#*:}; arch=${rest%%=*}; version=${rest#*=}
      list="$list ${name}_$(printf '%s' "$version" | sed 's/:/%3a/')_${arch}.deb"
    done
    # shellcheck disable=SC2086
    tar --owner=0 --group=0 --numeric-owner --mtime=@315532800 -cf "$archive.tmp" $list
    mv "$archive.tmp" "$archive"
  fi
fi
printf '{"changed": %s, "files": [%s], "archive": "%s"}\n' "$changed" "$files" "$archive"
