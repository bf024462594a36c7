#!/usr/bin/env bash
# Runs every test: unit, root integration tests in real namespaces, fuzz and
# soak (short), and the end-to-end scripts. Installs what it needs first.
# Every stage runs even when an earlier one failed; the summary lists each
# with its time, and the exit code is non-zero if any failed. This is what
# CI runs (.ci/run).
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
ensure_tools

start=$SECONDS
summary=() failed=0
# stage NAME CMD...: runs one stage, recording its outcome and duration.
stage() {
	local name=$1 t0=$SECONDS rc=0
	shift
	log "$name"
	"$@" || rc=$?
	if [ $rc -eq 0 ]; then
		summary+=("ok    $(printf '%4d' $((SECONDS - t0))) s  $name")
	else
		summary+=("FAIL  $(printf '%4d' $((SECONDS - t0))) s  $name (exit $rc)")
		failed=1
	fi
	return 0
}
formatted() {
	local unformatted
	unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './test/bench/out/*'))
	[ -z "$unformatted" ] || { echo "gofmt needed: $unformatted" >&2; return 1; }
}

stage "build" ./scripts/build.sh
[ $failed -eq 0 ] || { printf '%s\n' "${summary[@]}"; exit 1; } # nothing to test without binaries
export NETDRIVERS_BIN=$PWD/bin
stage "gofmt" formatted
stage "go vet" go vet ./...
stage "unit and integration tests (go test ./...)" go test -count=1 -timeout 20m ./...
stage "fuzz, short (scripts/fuzz.sh: every target, a few seconds each)" ./scripts/fuzz.sh
stage "soak, short (scripts/soak.sh: 800 random operations by 16 workers, no leak)" ./scripts/soak.sh -ops 800 -workers 16
stage "cnitool end-to-end (scripts/e2e-cnitool.sh)" ./scripts/e2e-cnitool.sh
stage "demo (scripts/demo.sh, the README's main job, to its end)" sh -c './scripts/demo.sh >/dev/null'
stage "runtimes end-to-end: containerd CRI, Podman (scripts/e2e-runtimes.sh)" ./scripts/e2e-runtimes.sh
# numbers sane, not fast: test/bench/out/latest-quick
stage "benchmark smoke test (scripts/bench.sh --quick)" sh -c './scripts/bench.sh --quick >/dev/null'

echo
printf '%s\n' "${summary[@]}"
if [ $failed -ne 0 ]; then
	log "FAILED after $((SECONDS - start)) s"
	exit 1
fi
log "all tests passed in $((SECONDS - start)) s"
