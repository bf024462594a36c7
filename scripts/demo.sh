#!/usr/bin/env bash
# The main job on a fresh machine: builds the plugins, attaches throw-away
# namespaces with `cnitool add` using the shipped conf-examples/, shows what
# each container sees, and tears everything down again.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
ensure_tools
./scripts/build.sh

work=$(mktemp -d /tmp/nd-demo.XXXXXX)
export CNI_PATH=$PWD/bin NETCONFPATH=$work/net.d
mkdir -p "$NETCONFPATH"
cp conf-examples/*.conflist "$NETCONFPATH/"

nsnames=() teardown=()
cleanup() {
	local i
	for ((i = ${#teardown[@]} - 1; i >= 0; i--)); do eval "${teardown[$i]}" >/dev/null 2>&1 || true; done
	for i in "${nsnames[@]}"; do ip netns del "$i" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

section() { printf '\n\033[1;34m### %s\033[0m\n' "$*"; }
say() { printf '\033[1m$ %s\033[0m\n' "$*"; }
run() { say "$*"; "$@"; }
newns() { ip netns add "$1"; nsnames+=("$1"); }
# attach NET NS: cnitool add, with DEL queued for teardown
attach() {
	say "cnitool add $1 /run/netns/$2"
	cnitool add "$1" "/run/netns/$2" | head -c 2000
	echo
	teardown+=("cnitool del $1 /run/netns/$2")
}
detach() { run cnitool del "$1" "/run/netns/$2"; }
sees() {
	say "ip netns exec $1 ip addr; ip route"
	ip -n "$1" -br addr
	ip -n "$1" route
	ip -n "$1" -6 route | grep -v '^fe80' || true
}
reach() { # reach NS ADDR: one ping, reports the outcome
	if ip netns exec "$1" busybox ping -c1 -W1 "$2" >/dev/null 2>&1; then
		echo "  $1 -> $2: reachable"
	else
		echo "  $1 -> $2: unreachable"
	fi
}

demo_none() {
	section "none: Docker's --network none (loopback only)"
	newns nd-demo-none
	attach nd-none nd-demo-none
	sees nd-demo-none
	reach nd-demo-none 127.0.0.1
	reach nd-demo-none 10.0.0.1
	detach nd-none nd-demo-none
}

demo_none
section "done: every namespace and attachment removed"
