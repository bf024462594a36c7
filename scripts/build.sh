#!/usr/bin/env bash
# Builds every plugin into bin/ (or the directory given): static binaries,
# version stamped from git. "loopback" is the none binary under the name
# containerd always runs.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bin}
mkdir -p "$out"
export PATH=$PATH:/usr/local/go/bin
version=$(git describe --always --dirty --tags 2>/dev/null || echo dev)
CGO_ENABLED=0 go build -trimpath \
	-ldflags "-s -w -X github.com/netdrivers/netdrivers/pkg/cniplugin.Version=$version" \
	-o "$out/" ./plugins/...
ln -f "$out/none" "$out/loopback"
