#!/usr/bin/env bash
# Runs make targets two at a time, in the order given: the first two at once, then each next one in
# whichever lane frees first (`make test`: test-fast in one lane while the other builds the images
# and runs the Pi lab, then the other slow targets, longest first). make -j2 alone does not keep that
# order: it may start a later target's prerequisites first and leave test-fast waiting.
# Each target's output is printed in one piece when it ends, with its status and minutes. Every
# target runs even after a failure; the exit status is 1 if any failed.
#   scripts/test-lanes.sh TARGET...
set -u
make=${MAKE:-make}
targets=("$@")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo 0 >"$work/next"

lane() {
  local failed=0 index target started status
  while :; do
    index=$(flock "$work/next" sh -c 'i=$(cat "$1"); echo $((i + 1)) >"$1"; echo "$i"' _ "$work/next")
    [ "$index" -lt "${#targets[@]}" ] || break
    target=${targets[$index]}
    started=$SECONDS
    if $make --no-print-directory "$target" >"$work/$target.log" 2>&1; then status=passed; else status=FAILED; failed=1; fi
    flock "$work/print" sh -c 'cat "$1"; echo "== make $2: $3 in $4 min"' _ "$work/$target.log" "$target" "$status" \
      "$(( (SECONDS - started) / 60 ))"
  done
  return "$failed"
}

lane & first=$!
lane & second=$!
wait "$first"; first_status=$?
wait "$second"; second_status=$?
[ "$first_status" = 0 ] && [ "$second_status" = 0 ]
