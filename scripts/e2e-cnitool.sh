#!/usr/bin/env bash
# End-to-end: every shipped conf-examples/*.conflist through cnitool
# add/check/del against namespaces made with `ip netns add`, setting only
# the fields the README names as the user's. Fails on any miss.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
ensure_tools
[ -x bin/none ] || ./scripts/build.sh

work=$(mktemp -d /tmp/nd-e2e.XXXXXX)
nsnames=()
cleanup() {
	local n
	for n in "${nsnames[@]}"; do ip netns del "$n" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

export CNI_PATH=$PWD/bin NETCONFPATH=$work/net.d
mkdir -p "$NETCONFPATH"
fail() { echo "FAIL: $*" >&2; exit 1; }

newns() {
	local n=nd-e2e-$1-$$
	ip netns add "$n"
	nsnames+=("$n")
	echo "$n"
}

# none: lo only, up, with loopback addresses; CHECK refuses an extra link.
e2e_none() {
	cp conf-examples/none.conflist "$NETCONFPATH/"
	local ns out
	ns=$(newns none)
	out=$(cnitool add nd-none "/run/netns/$ns")
	echo "$out" | grep -q '"127.0.0.1/8"' || fail "none: result lacks 127.0.0.1/8: $out"
	ip -n "$ns" link show lo | grep -q 'UP' || fail "none: lo is not up"
	[ "$(ip -n "$ns" -o link | wc -l)" -eq 1 ] || fail "none: more than lo in the namespace"
	cnitool check nd-none "/run/netns/$ns" || fail "none: CHECK failed"
	ip -n "$ns" link add nd-extra type veth peer name nd-extra-p
	if cnitool check nd-none "/run/netns/$ns" 2>/dev/null; then fail "none: CHECK passed with an extra link"; fi
	ip -n "$ns" link del nd-extra
	cnitool del nd-none "/run/netns/$ns" || fail "none: DEL failed"
	cnitool del nd-none "/run/netns/$ns" || fail "none: second DEL failed"
	echo "ok   none.conflist"
}

for f in conf-examples/*.conflist; do
	name=$(basename "$f" .conflist)
	fn="e2e_${name//-/_}"
	if ! declare -F "$fn" >/dev/null; then
		fail "no cnitool end-to-end case for $f"
	fi
	"$fn"
done
echo "cnitool end-to-end: all conflists passed"
