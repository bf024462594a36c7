#!/usr/bin/env bash
# Builds every plugin into bin/ (or the directory given): static, stripped
# binaries (NETDRIVERS_STRIP=0 keeps the symbols, for perf), version stamped
# from git. "loopback" is the none binary under the name containerd always
# runs.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bin}
mkdir -p "$out"
export PATH=$PATH:/usr/local/go/bin
version=$(git describe --always --dirty --tags 2>/dev/null || echo dev)
# Nothing here reads memory profiles, so the linker has the runtime turn
# sampling off, but only after its first allocations, of which it samples
# one or two, each with a walk of the stack that faults in pages of the
# binary's tables. Making 0 the compiled-in default skips those samples.
ldflags="-X runtime.godebugDefault=memprofilerate=0 -X github.com/netdrivers/netdrivers/pkg/cniplugin.Version=$version"
[ "${NETDRIVERS_STRIP:-1}" = 0 ] || ldflags="-s -w $ldflags"
build() { CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" "$@"; }
build -o "$out/" $(go list ./plugins/... | grep -v '/plugins/macvlan$')
# macvlan with these packages' code not inlined: a smaller binary and a
# lower peak RSS (README, "Where the time goes"); host-local-bridge, whose
# ADD makes many more netlink requests, keeps the inlining. The build info
# records only the last -gcflags: netlink's, which TestBuildFlags checks.
noinline="github.com/netdrivers/netdrivers/... github.com/containernetworking/... encoding/json fmt net time github.com/vishvananda/netlink/..."
build $(printf -- '-gcflags=%s=-l ' $noinline) -o "$out/" ./plugins/macvlan
ln -f "$out/none" "$out/loopback"
