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
	# newns runs in $(...) subshells, so nsnames stays empty here: the
	# namespaces are found by their name (nd-e2e-<case>-<pid>) instead.
	for n in "${nsnames[@]}" $(ip netns list | awk '{print $1}' | grep -E "^nd-e2e-.*-$$\$"); do
		ip netns del "$n" 2>/dev/null || true
	done
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
	# (grep >/dev/null, not -q: with pipefail, -q can SIGPIPE the writer)
	echo "$out" | grep '"127.0.0.1/8"' >/dev/null || fail "none: result lacks 127.0.0.1/8: $out"
	ip -n "$ns" link show lo | grep 'UP' >/dev/null || fail "none: lo is not up"
	[ "$(ip -n "$ns" -o link | wc -l)" -eq 1 ] || fail "none: more than lo in the namespace"
	cnitool check nd-none "/run/netns/$ns" || fail "none: CHECK failed"
	ip -n "$ns" link add nd-extra type veth peer name nd-extra-p
	if cnitool check nd-none "/run/netns/$ns" 2>/dev/null; then fail "none: CHECK passed with an extra link"; fi
	ip -n "$ns" link del nd-extra
	cnitool del nd-none "/run/netns/$ns" || fail "none: DEL failed"
	cnitool del nd-none "/run/netns/$ns" || fail "none: second DEL failed"
	echo "ok   none.conflist"
}

# hostns and joinns run cnitool from a throw-away "node" namespace (nsenter
# enters only its network namespace, so the re-bind mounts are the real
# ones): the plugins treat it as the host, and the machine's own namespace
# is never re-bound. cnitool's container ID is derived from the netns path.
cnitool_id() { printf 'cnitool-%s' "$(printf %s "$1" | sha512sum | cut -c1-20)"; }
ino() { stat -L -c %i "$1"; }
# e2e_node NAME: a namespace with an uplink (up0 192.0.2.10/24, default route).
e2e_node() {
	local n
	n=$(newns "$1")
	ip -n "$n" link add up0 type veth peer name up0p
	ip -n "$n" addr add 192.0.2.10/24 dev up0
	ip -n "$n" link set up0 up
	ip -n "$n" link set up0p up
	ip -n "$n" link set lo up
	ip -n "$n" route add default via 192.0.2.1 dev up0
	echo "$n"
}

# hostns: the container's path is re-bound onto the node's namespace and
# sees its links; ports are reserved host-wide (101 on overlap).
e2e_hostns() {
	cp conf-examples/hostns.conflist "$NETCONFPATH/"
	local node a b out rc
	node=$(e2e_node hostns-node)
	a=$(newns hostns-a)
	b=$(newns hostns-b)
	on() { NETDRIVERS_STATE_DIR=$work/state-hostns nsenter --net="/run/netns/$node" "$@"; }
	out=$(CAP_ARGS='{"portMappings":[{"hostPort":18080,"containerPort":80,"protocol":"tcp"}]}' on cnitool add nd-hostns "/run/netns/$a")
	echo "$out" | grep '"name": "up0"' >/dev/null || fail "hostns: result lacks the node's up0: $out"
	echo "$out" | grep '"192.0.2.10/24"' >/dev/null || fail "hostns: result lacks the node's address: $out"
	[ "$(ino "/run/netns/$a")" = "$(ino "/run/netns/$node")" ] || fail "hostns: $a was not re-bound onto the node's namespace"
	ip -n "$a" -br link | grep '^up0' >/dev/null || fail "hostns: the container does not see the node's up0"
	CAP_ARGS='{"portMappings":[{"hostPort":18080,"containerPort":80,"protocol":"tcp"}]}' on cnitool check nd-hostns "/run/netns/$a" || fail "hostns: CHECK failed"
	rc=0
	out=$(CAP_ARGS='{"portMappings":[{"hostPort":18080,"containerPort":8080,"protocol":"tcp"}]}' on cnitool add nd-hostns "/run/netns/$b" 2>&1) || rc=$?
	[ "$rc" -ne 0 ] && echo "$out" | grep 'already in use' >/dev/null || fail "hostns: a second reservation of tcp/18080 was not refused: $out"
	[ "$(ino "/run/netns/$b")" != "$(ino "/run/netns/$node")" ] || fail "hostns: a refused ADD re-bound $b"
	on cnitool del nd-hostns "/run/netns/$b" || fail "hostns: DEL after a failed ADD failed"
	on cnitool del nd-hostns "/run/netns/$a" || fail "hostns: DEL failed"
	on cnitool del nd-hostns "/run/netns/$a" || fail "hostns: second DEL failed"
	ip -n "$node" -br addr show up0 | grep 192.0.2.10/24 >/dev/null || fail "hostns: DEL changed the node"
	echo "ok   hostns.conflist"
}

# joinns: a sidecar's path is re-bound onto the target's namespace (the
# conflist's "target", the one field a user sets), then another joins the
# sidecar by container ID (CNI_ARGS TARGET=).
e2e_joinns() {
	local node target side third out
	node=$(e2e_node joinns-node)
	target=$(newns joinns-target)
	side=$(newns joinns-side)
	third=$(newns joinns-third)
	ip -n "$target" link add eth0 type veth peer name eth0p
	ip -n "$target" addr add 10.99.0.2/24 dev eth0
	ip -n "$target" link set eth0 up
	sed "s#/run/netns/nd-target#/run/netns/$target#" conf-examples/joinns.conflist >"$NETCONFPATH/joinns.conflist"
	on() { NETDRIVERS_STATE_DIR=$work/state-joinns nsenter --net="/run/netns/$node" "$@"; }
	out=$(on cnitool add nd-joinns "/run/netns/$side")
	echo "$out" | grep '"10.99.0.2/24"' >/dev/null || fail "joinns: result lacks the target's address: $out"
	[ "$(ino "/run/netns/$side")" = "$(ino "/run/netns/$target")" ] || fail "joinns: $side was not re-bound onto the target"
	ip -n "$side" -br addr show eth0 | grep 10.99.0.2/24 >/dev/null || fail "joinns: the sidecar does not see the target's eth0"
	on cnitool check nd-joinns "/run/netns/$side" || fail "joinns: CHECK failed"
	CNI_ARGS="IgnoreUnknown=1;TARGET=$(cnitool_id "/run/netns/$side")" on cnitool add nd-joinns "/run/netns/$third" >/dev/null ||
		fail "joinns: joining the sidecar by container ID failed"
	[ "$(ino "/run/netns/$third")" = "$(ino "/run/netns/$target")" ] || fail "joinns: $third did not join through the sidecar's ID"
	on cnitool del nd-joinns "/run/netns/$third" || fail "joinns: DEL failed"
	on cnitool del nd-joinns "/run/netns/$side" || fail "joinns: DEL failed"
	on cnitool del nd-joinns "/run/netns/$side" || fail "joinns: second DEL failed"
	ip -n "$target" -br addr show eth0 | grep 10.99.0.2/24 >/dev/null || fail "joinns: DEL changed the target"
	echo "ok   joinns.conflist"
}

# macvlan: two containers on a veth parent (the conflist's "master", the one
# field a user sets; its peer is an outside host and the gateway) reach each
# other and the outside; the node reaches them through the host shim, which
# goes with the last attachment. cnitool runs in a throw-away node namespace.
e2e_macvlan() {
	local node out a b ra rb ipa ipb
	node=$(newns macvlan-node)
	out=$(newns macvlan-out)
	ip -n "$node" link add nd-mvp0 type veth peer name eth0 netns "$out"
	ip -n "$node" addr add 192.168.220.2/24 dev nd-mvp0
	ip -n "$node" link set nd-mvp0 up
	ip -n "$out" addr add 192.168.220.1/24 dev eth0
	ip -n "$out" link set eth0 up
	sed 's#"master": "eth1"#"master": "nd-mvp0"#' conf-examples/macvlan.conflist | ownstore "$work/ipam" >"$NETCONFPATH/macvlan.conflist"
	a=$(newns macvlan-a)
	b=$(newns macvlan-b)
	on() { NETDRIVERS_STATE_DIR=$work/state-macvlan nsenter --net="/run/netns/$node" "$@"; }
	ra=$(on cnitool add nd-macvlan "/run/netns/$a")
	rb=$(on cnitool add nd-macvlan "/run/netns/$b")
	ipa=$(echo "$ra" | grep -o '192\.168\.220\.[0-9]*/24' | cut -d/ -f1)
	ipb=$(echo "$rb" | grep -o '192\.168\.220\.[0-9]*/24' | cut -d/ -f1)
	[ -n "$ipa" ] && [ -n "$ipb" ] && [ "$ipa" != "$ipb" ] || fail "macvlan: want two addresses in 192.168.220.0/24: $ra $rb"
	# (grep without -q: with pipefail, -q can SIGPIPE the writer)
	ip -n "$a" -d link show eth0 | grep 'macvlan mode bridge' >/dev/null || fail "macvlan: $a's eth0 is not a bridge-mode macvlan"
	ip -n "$a" route | grep '^default via 192.168.220.1' >/dev/null || fail "macvlan: no default route via the gateway in $a"
	ip netns exec "$a" busybox ping -c1 -W2 "$ipb" >/dev/null || fail "macvlan: $ipa cannot reach $ipb"
	ip netns exec "$a" busybox ping -c1 -W2 192.168.220.1 >/dev/null || fail "macvlan: $ipa cannot reach the outside host"
	ip netns exec "$node" busybox ping -c1 -W2 "$ipa" >/dev/null || fail "macvlan: the node cannot reach $ipa through the shim"
	ip netns exec "$b" busybox ping -c1 -W2 192.168.220.2 >/dev/null || fail "macvlan: $ipb cannot reach the node"
	on cnitool check nd-macvlan "/run/netns/$a" || fail "macvlan: CHECK failed"
	on cnitool del nd-macvlan "/run/netns/$a" || fail "macvlan: DEL failed"
	ip netns exec "$node" busybox ping -c1 -W2 "$ipb" >/dev/null || fail "macvlan: the shim went with the first DEL"
	on cnitool del nd-macvlan "/run/netns/$b" || fail "macvlan: DEL failed"
	on cnitool del nd-macvlan "/run/netns/$b" || fail "macvlan: second DEL failed"
	! ip -n "$node" -br link | grep '^mvshim' >/dev/null || fail "macvlan: the shim outlived the last attachment"
	! ip -n "$a" -br link | grep '^eth0' >/dev/null || fail "macvlan: DEL left eth0 in $a"
	[ -d "$work/ipam/nd-macvlan" ] || fail "macvlan: no address store in $work/ipam"
	! ls "$work/ipam/nd-macvlan" | grep '^192' >/dev/null || fail "macvlan: DEL left addresses in the store"
	echo "ok   macvlan.conflist"
}

# host-local-bridge: two containers on the shipped network inside a
# throw-away node; a published port (CAP_ARGS, as a runtime passes it)
# answers from the node via 127.0.0.1 and its own address, and from the
# other container through the node's address; DEL leaves no attachment.
e2e_host_local_bridge() {
	ownstore "$work/ipam" <conf-examples/host-local-bridge.conflist >"$NETCONFPATH/host-local-bridge.conflist"
	local node a b ra ipa out
	node=$(e2e_node bridge-node)
	a=$(newns bridge-a)
	b=$(newns bridge-b)
	on() { NETDRIVERS_STATE_DIR=$work/state-bridge nsenter --net="/run/netns/$node" "$@"; }
	local caps='{"portMappings":[{"hostPort":18080,"containerPort":80,"protocol":"tcp"}]}'
	ra=$(CAP_ARGS=$caps on cnitool add nd-bridge "/run/netns/$a")
	on cnitool add nd-bridge "/run/netns/$b" >/dev/null
	ipa=$(echo "$ra" | grep -o '10\.222\.0\.[0-9]*/24' | cut -d/ -f1)
	[ -n "$ipa" ] || fail "host-local-bridge: no address from 10.222.0.0/24: $ra"
	echo "$ra" | grep 'fd7a:6e64:de::' >/dev/null || fail "host-local-bridge: no IPv6 address: $ra"
	ip -n "$a" route | grep '^default via 10.222.0.1' >/dev/null || fail "host-local-bridge: no default route in $a"
	mkdir -p "$work/www"
	echo "hello from $ipa" >"$work/www/index.html"
	ip netns exec "$a" busybox httpd -p 80 -h "$work/www"
	for url in http://127.0.0.1:18080/ http://192.0.2.10:18080/; do
		out=$(retry ip netns exec "$node" curl -s --max-time 1 "$url") || fail "host-local-bridge: $url from the node: no answer"
		[ "$out" = "hello from $ipa" ] || fail "host-local-bridge: $url answered $out"
	done
	retry ip netns exec "$b" curl -s --max-time 1 http://192.0.2.10:18080/ >/dev/null ||
		fail "host-local-bridge: the published port is not reachable from another container"
	ip netns exec "$b" busybox ping -c1 -W2 "$ipa" >/dev/null || fail "host-local-bridge: containers cannot reach each other"
	CAP_ARGS=$caps on cnitool check nd-bridge "/run/netns/$a" || fail "host-local-bridge: CHECK failed"
	ip netns pids "$a" | xargs -r kill
	CAP_ARGS=$caps on cnitool del nd-bridge "/run/netns/$a" || fail "host-local-bridge: DEL failed"
	on cnitool del nd-bridge "/run/netns/$b" || fail "host-local-bridge: DEL failed"
	on cnitool del nd-bridge "/run/netns/$b" || fail "host-local-bridge: second DEL failed"
	! ip -n "$node" -br link | grep '^veth' >/dev/null || fail "host-local-bridge: veths left on the node"
	! ls /var/lib/cni/networks/nd-bridge 2>/dev/null | grep -E '^(10|fd)' >/dev/null || fail "host-local-bridge: addresses left in the store"
	! ip netns exec "$node" nft list ruleset | grep "$ipa" >/dev/null || fail "host-local-bridge: rules for $ipa left"
	echo "ok   host-local-bridge.conflist"
}

# retry CMD...: up to 20 tries, 100 ms apart (a server starting up).
retry() {
	local i
	for i in $(seq 20); do
		"$@" && return 0
		sleep 0.1
	done
	return 1
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
