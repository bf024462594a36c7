# Shared helpers for the scripts (sourced, not run).
# shellcheck shell=bash

export PATH=$PATH:/usr/local/go/bin:/usr/sbin:/sbin
if ! command -v go >/dev/null 2>&1; then
	echo "$0: needs Go $(sed -n 's/^go //p' "$(dirname "${BASH_SOURCE[0]}")/../go.mod") or later on PATH or in /usr/local/go (https://go.dev/dl/; Debian 12's golang-go is too old)" >&2
	exit 1
fi
GOBIN_DIR=$(go env GOPATH)/bin
export PATH=$PATH:$GOBIN_DIR

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

need_root() {
	if [ "$(id -u)" -ne 0 ]; then
		echo "$0: run as root (sudo $0): it creates network namespaces" >&2
		exit 1
	fi
}

apt_updated=
# ensure_pkgs CMD:PACKAGE... installs the Debian packages whose command is missing.
ensure_pkgs() {
	local missing=() pair cmd pkg
	for pair in "$@"; do
		cmd=${pair%%:*} pkg=${pair#*:}
		command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	log "installing ${missing[*]}"
	if [ -z "$apt_updated" ]; then
		DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
		apt_updated=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_cnitool() {
	command -v cnitool >/dev/null 2>&1 && return 0
	log "installing cnitool v1.3.1"
	go install github.com/containernetworking/cni/cnitool@v1.3.1
}

# ownstore DIR: the conflist on stdin, with every host-local store in DIR
# rather than /var/lib/cni/networks, so that a script leaves none behind.
ownstore() { sed "s#\"type\": \"host-local\"#&, \"dataDir\": \"$1\"#"; }

# ensure_tools installs what the demo and the tests use.
ensure_tools() {
	ensure_pkgs ip:iproute2 nft:nftables iptables:iptables busybox:busybox-static curl:curl
	ensure_cnitool
}
