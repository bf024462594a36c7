#!/usr/bin/env bash
# Benchmarks our plugins against the reference plugins (built from the Go
# module proxy into .cache/), a no-op plugin (the exec floor) and a bare
# veth add/delete (the kernel floor), all in throwaway namespaces.
#   scripts/bench.sh            full run (under 15 minutes on 2 cores)
#   scripts/bench.sh --quick    smoke run (under a minute): small W and N, sanity checks
#   scripts/bench.sh --only 'ours/|floor/'   only matching scenarios
#   scripts/bench.sh --out DIR  results elsewhere (default test/bench/out/, gitignored)
#   scripts/bench.sh --rev REV  plugins built from commit REV, not the working tree
#   scripts/bench.sh -strace DIR  also strace (-f -C -tt -T) 3 lifecycles per scenario at its largest W
#   scripts/bench.sh -perf DIR    also perf record -g them (plugins built unstripped for Go symbols)
#   scripts/bench.sh --publish [RUN]  copy the latest run (or the run directory RUN) into the README's Performance section and docs/bench.svg
# Other flags go to the Go program (go run ./test/bench -h). Results:
# <out>/<timestamp>/{report.md,results.json,plot.svg}; <out>/latest points at the newest
# full run, <out>/latest-quick at the newest --quick one.
# Uses $NETDRIVERS_BIN when set (prebuilt plugins), else builds them.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = --publish ]; then
	run=$(readlink -f "${2:-test/bench/out/latest}")
	[ -f "$run/report.md" ] || { echo "no report in $run" >&2; exit 1; }
	grep -q '^<!-- bench:begin -->$' README.md || { echo "README.md lacks the bench markers" >&2; exit 1; }
	mkdir -p docs
	cp "$run/plot.svg" docs/bench.svg
	# Replace what lies between the markers with the run's report.
	awk -v report="$run/report.md" '
		/^<!-- bench:end -->$/ { skip = 0 }
		!skip { print }
		/^<!-- bench:begin -->$/ { while ((getline l < report) > 0) print l; print ""; skip = 1 }
	' README.md >README.md.bench && mv README.md.bench README.md
	echo "published $run into README.md and docs/bench.svg"
	exit 0
fi

. scripts/lib.sh
need_root
ensure_pkgs ip:iproute2 nft:nftables iptables:iptables

cmdline="scripts/bench.sh $*"
args=() out=test/bench/out rev= ldflags="-s -w"
while [ $# -gt 0 ]; do
	case $1 in
	--quick) args+=(-quick); shift ;;
	--only) args+=(-only "$2"); shift 2 ;;
	--out) out=$2; shift 2 ;;
	--rev) rev=$(git rev-parse --short "$2"); shift 2 ;;
	-strace) ensure_pkgs strace:strace; args+=(-strace "$(mkdir -p "$2" && cd "$2" && pwd)"); shift 2 ;;
	-perf) ensure_pkgs perf:linux-perf; args+=(-perf "$(mkdir -p "$2" && cd "$2" && pwd)"); ldflags=; shift 2 ;;
	-h|--help) sed -n '2,16p' "$0"; exit 0 ;;
	*) args+=("$1"); shift ;;
	esac
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
build=$out/.build
mkdir -p "$build/noop"

src=$PWD
if [ -n "$rev" ]; then
	# A clean export of the commit: others' uncommitted work stays out.
	src=$build/src-$rev
	rm -rf "$src" && mkdir -p "$src"
	git archive "$rev" | tar -x -C "$src"
	args+=(-plugins-rev "$rev")
fi
if [ -z "$rev" ] && [ -n "$ldflags" ] && [ -n "${NETDRIVERS_BIN:-}" ] && [ -x "$NETDRIVERS_BIN/none" ]; then
	bin=$(cd "$NETDRIVERS_BIN" && pwd)
else
	bin=$build/bin
	rm -rf "$bin"
	log "build plugins${rev:+ at $rev}"
	# -perf needs symbols: NETDRIVERS_STRIP=0, or where build.sh predates
	# it, every plugin built one by one, unstripped.
	strip=1
	[ -n "$ldflags" ] || strip=0
	if ! (cd "$src" && { [ $strip = 1 ] || grep -q NETDRIVERS_STRIP scripts/build.sh; } &&
		NETDRIVERS_STRIP=$strip ./scripts/build.sh "$bin") 2>"$build/build.log"; then
		# A plugin that does not build only skips its scenarios.
		[ -n "$ldflags" ] && log "not every plugin builds; building them one by one"
		for d in "$src"/plugins/*/; do
			d=plugins/$(basename "$d")
			name=$(basename "$d")
			if ! (cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$bin/$name" "./$d") 2>"$build/$name.log"; then
				log "warning: $name does not build, its scenarios are skipped:"
				head -5 "$build/$name.log" >&2
				rm -f "$bin/$name"
			fi
		done
		[ -x "$bin/none" ] && ln -f "$bin/none" "$bin/loopback"
	fi
fi

log "build the no-op plugin, the rusage helper and the benchmark"
# The exec floor is built as our plugins are: static, stripped, and with
# memory profiling off from the first allocation (scripts/build.sh).
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags -X runtime.godebugDefault=memprofilerate=0" -o "$build/noop/noop" ./test/bench/noop
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$build/rusage" ./test/bench/rusage
go build -o "$build/bench" ./test/bench

exec "$build/bench" -bin "$bin" -noop "$build/noop" -rusage "$build/rusage" -out "$out" -command "${cmdline% }" "${args[@]}"
