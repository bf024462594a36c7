#!/usr/bin/env bash
# Runs every test: unit, root integration tests in real namespaces, and the
# end-to-end scripts. Installs what it needs first. Exits non-zero on any
# failure. This is what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
ensure_tools

start=$SECONDS
log "build"
./scripts/build.sh
export NETDRIVERS_BIN=$PWD/bin

log "gofmt and go vet"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
[ -z "$unformatted" ] || { echo "gofmt needed: $unformatted" >&2; exit 1; }
go vet ./...

log "unit and integration tests"
go test -count=1 -timeout 20m ./...

log "fuzz, short (scripts/fuzz.sh: every target, a few seconds each)"
./scripts/fuzz.sh

log "soak, short (scripts/soak.sh: 800 random operations by 16 workers, no leak)"
./scripts/soak.sh -ops 800 -workers 16

log "cnitool end-to-end"
./scripts/e2e-cnitool.sh

log "runtimes end-to-end (containerd CRI, Podman)"
./scripts/e2e-runtimes.sh

log "benchmark smoke test"; ./scripts/bench.sh --quick >/dev/null # numbers sane, not fast: test/bench/out/latest

log "all tests passed in $((SECONDS - start)) s"
