#!/usr/bin/env bash
# Freezes the edgefed source the lab deploys: copies the package and its build files into
# .lab/src, which inventory/lab names as the project the edgefed_install role builds its wheel from.
# A run of `molecule test` then installs one version of the code from converge to teardown, even
# while someone edits the working tree (the idempotence step would otherwise see a new wheel).
# `make lab` refreshes the snapshot before each converge, so edits do reach a running lab.
# Prints "changed" when the snapshot was replaced, "unchanged" otherwise. EDGEFED_LAB_STATE names
# another state directory than .lab (the MPI lab's .lab-mpi).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
state=${EDGEFED_LAB_STATE:-$root/.lab}
dest="$state/src"
mkdir -p "$state"
new=$(mktemp -d "$state/src.XXXXXX")
trap 'rm -rf "$new"' EXIT

files=()
for name in pyproject.toml README.md LICENSE setup.cfg setup.py MANIFEST.in; do
  [ -f "$root/$name" ] && files+=("$name")
done
tar -C "$root" --exclude=__pycache__ --exclude='*.pyc' -cf - "${files[@]}" edgefed | tar -C "$new" -xf -

if [ -d "$dest" ] && diff -rq "$dest" "$new" >/dev/null 2>&1; then
  echo unchanged
  exit 0
fi
rm -rf "$dest.old"
[ -d "$dest" ] && mv "$dest" "$dest.old"
mv "$new" "$dest"
rm -rf "$dest.old"
chmod 0755 "$dest"
echo changed
