#!/usr/bin/env bash
# Runs every Go fuzz target of the module for a short while (FUZZTIME per
# target, default 3s): the seed corpus (testdata/fuzz/) plus new inputs.
# Part of scripts/test.sh; for a longer hunt: FUZZTIME=5m scripts/fuzz.sh.
# Usage: scripts/fuzz.sh [PACKAGE...]   (default: every package with targets)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
fuzztime=${FUZZTIME:-3s}

pkgs=("$@")
if [ ${#pkgs[@]} -eq 0 ]; then
	mapfile -t pkgs < <(grep -rl --include='*_test.go' '^func Fuzz' pkg plugins 2>/dev/null | xargs -r -n1 dirname | sort -u | sed 's|^|./|')
fi
n=0
for p in "${pkgs[@]}"; do
	for target in $(grep -h '^func Fuzz' "$p"/*_test.go | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do
		log "fuzz $p $target ($fuzztime)"
		# -parallel 2: the machine's two cores; new failing inputs land in
		# $p/testdata/fuzz/$target and fail the run.
		if ! out=$(go test "$p" -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -parallel 2 2>&1); then
			echo "$out" >&2
			exit 1
		fi
		n=$((n + 1))
	done
done
log "fuzzed $n targets, $fuzztime each"
