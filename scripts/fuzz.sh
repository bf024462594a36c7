#!/usr/bin/env bash
# Runs every Go fuzz target of the module (func FuzzXxx in a _test.go file)
# for a few seconds each, one after the other. Without -fuzz, `go test`
# already runs each target's committed seed corpus (testdata/fuzz/<Target>/)
# as a unit test; this adds fresh random inputs on top.
#   scripts/fuzz.sh                 every target, 3 s each ($FUZZTIME if set)
#   scripts/fuzz.sh -time 30s       longer
#   scripts/fuzz.sh -only 'netconf|ipam'   targets whose "<dir> <Target>" matches
# A failing input is written by Go to <pkg>/testdata/fuzz/<Target>/<hash>:
# commit it with the fix, it then stays in the seed corpus. Needs no root.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

fuzztime=${FUZZTIME:-3s} only=.
while [ $# -gt 0 ]; do
	case $1 in
	-time) fuzztime=$2; shift 2 ;;
	-only) only=$2; shift 2 ;;
	-h|--help) sed -n '2,10p' "$0"; exit 0 ;;
	*) echo "$0: unknown argument $1" >&2; exit 2 ;;
	esac
done

# "<dir> <Target>" for every fuzz target, from the sources themselves, so
# that a new target is run without editing this script.
targets=$(git ls-files --cached --others --exclude-standard '*_test.go' |
	xargs grep -H -o '^func Fuzz[A-Za-z0-9_]*(f \*testing\.F)' |
	sed -E 's#^(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*).*#\1 \2#' | sort -u | grep -E -- "$only" || true)
[ -n "$targets" ] || { echo "$0: no fuzz target matches $only" >&2; exit 1; }

failed=() n=0 start=$SECONDS
while read -r dir target; do
	n=$((n + 1))
	out=$(mktemp)
	fuzz() { go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "./$dir" >"$out" 2>&1; }
	# A bare "context deadline exceeded" with no failing input written is a
	# race in Go's fuzzing coordinator at the end of -fuzztime
	# (golang/go#75804, fixed in go1.27), not a finding: run the target again.
	if fuzz || { grep -q '^    context deadline exceeded$' "$out" && ! grep -q 'Failing input written' "$out" &&
		printf '%-28s %-20s retry (fuzzing coordinator race)\n' "$dir" "$target" && fuzz; }; then
		printf '%-28s %-20s ok   %s\n' "$dir" "$target" "$(grep -o 'execs: [0-9]*' "$out" | tail -1)"
	else
		printf '%-28s %-20s FAIL\n' "$dir" "$target"
		grep -v '^fuzz: elapsed' "$out" | sed -n 1,40p >&2 # reads all: no SIGPIPE under pipefail
		failed+=("$dir $target")
	fi
	rm -f "$out"
done <<<"$targets"

if [ ${#failed[@]} -gt 0 ]; then
	log "fuzz: ${#failed[@]} of $n targets failed: ${failed[*]}"
	exit 1
fi
log "fuzz: $n targets, $fuzztime each, no failure ($((SECONDS - start)) s)"
