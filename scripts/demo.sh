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
for f in conf-examples/*.conflist; do ownstore "$work/ipam" <"$f" >"$NETCONFPATH/${f##*/}"; done

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
# upto N: the first N bytes of stdin, which is still read to its end: a
# reader that quits early kills the writer with SIGPIPE, which pipefail
# turns into a failed demo.
upto() { dd bs="$1" count=1 iflag=fullblock status=none; cat >/dev/null; }
newns() { ip netns add "$1"; nsnames+=("$1"); }
# nodelan NODE LINK ADDR LAN LANADDR: namespaces NODE and LAN, NODE's LINK
# (ADDR) a veth to LAN's eth0 (LANADDR), all up.
nodelan() {
	newns "$1"
	newns "$4"
	ip -n "$1" link add "$2" type veth peer name eth0 netns "$4"
	ip -n "$1" addr add "$3" dev "$2"
	ip -n "$1" link set "$2" up
	ip -n "$1" link set lo up
	ip -n "$4" addr add "$5" dev eth0
	ip -n "$4" link set eth0 up
	ip -n "$4" link set lo up
}
# attach NET NS: cnitool add, with DEL queued for teardown
attach() {
	say "cnitool add $1 /run/netns/$2"
	cnitool add "$1" "/run/netns/$2" | upto 2000
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

# serve NS ADDR:PORT TEXT: a busybox web server inside NS (stopped at teardown)
serve() {
	mkdir -p "$work/www-$1"
	echo "$3" >"$work/www-$1/index.html"
	ip netns exec "$1" busybox httpd -f -p "$2" -h "$work/www-$1" &
	teardown+=("kill $!")
}
# fetch NS URL: one HTTP GET from inside NS, retried while the server starts
fetch() {
	local i
	say "ip netns exec $1 curl -s $2"
	for i in 1 2 3 4 5 6 7 8 9 10; do
		ip netns exec "$1" curl -s --max-time 1 "$2" && return 0
		sleep 0.2
	done
	echo "  (no answer)"
}

demo_hostns() {
	section "hostns: Docker's --network host (the container gets the node's own network stack)"
	echo "The \"node\" here is a throw-away namespace with an uplink, so this machine's own namespace"
	echo "is never re-bound; cnitool runs inside it (nsenter --net) as a runtime on that node would."
	newns nd-demo-node
	newns nd-demo-gw
	ip -n nd-demo-node link add uplink0 type veth peer name uplink0p netns nd-demo-gw
	ip -n nd-demo-node addr add 192.0.2.10/24 dev uplink0
	ip -n nd-demo-node link set uplink0 up
	ip -n nd-demo-gw addr add 192.0.2.1/24 dev uplink0p
	ip -n nd-demo-gw link set uplink0p up
	ip -n nd-demo-node link set lo up
	ip -n nd-demo-node route add default via 192.0.2.1 dev uplink0
	onnode() { NETDRIVERS_STATE_DIR=$work/state nsenter --net=/run/netns/nd-demo-node "$@"; }
	newns nd-demo-hostc
	say "ip -n nd-demo-hostc -br link   # a fresh pinned namespace: only lo"
	ip -n nd-demo-hostc -br link
	say "CAP_ARGS='{\"portMappings\":[{\"hostPort\":8080,\"containerPort\":8080}]}' cnitool add nd-hostns /run/netns/nd-demo-hostc"
	CAP_ARGS='{"portMappings":[{"hostPort":8080,"containerPort":8080}]}' onnode cnitool add nd-hostns /run/netns/nd-demo-hostc | upto 2000
	echo
	teardown+=("onnode cnitool del nd-hostns /run/netns/nd-demo-hostc")
	say "the path now shows the node's stack (re-bound: same namespace inode)"
	stat -L -c '  %n inode %i' /run/netns/nd-demo-node /run/netns/nd-demo-hostc
	sees nd-demo-hostc
	echo "A server in the container answers on the node's loopback (one port space):"
	serve nd-demo-hostc 127.0.0.1:8080 "hello from the host-network container"
	fetch nd-demo-node http://127.0.0.1:8080/
	echo "A second container asking for the same host port is refused (error 101), nothing changed:"
	newns nd-demo-hostc2
	say "CAP_ARGS=...8080... cnitool add nd-hostns /run/netns/nd-demo-hostc2"
	CAP_ARGS='{"portMappings":[{"hostPort":8080,"containerPort":80}]}' onnode cnitool add nd-hostns /run/netns/nd-demo-hostc2 2>&1 |
		grep -m1 'failed' || true
	onnode cnitool del nd-hostns /run/netns/nd-demo-hostc2
	ip -n nd-demo-hostc2 -br link
	detach_on_node() { say "cnitool del nd-hostns /run/netns/$1"; onnode cnitool del nd-hostns "/run/netns/$1"; }
	detach_on_node nd-demo-hostc
	say "ip -n nd-demo-node -br addr   # DEL left the node as it was"
	ip -n nd-demo-node -br addr
}

demo_joinns() {
	section "joinns: Docker's --network container:X (a sidecar joins another container's stack)"
	echo "The app is a host-local-bridge container on a throw-away node; the sidecar joins it by its"
	echo "container ID, per call (CNI_ARGS TARGET=), through the record the bridge plugin left."
	newns nd-demo-jnode
	ip -n nd-demo-jnode link set lo up
	onjn() { NETDRIVERS_STATE_DIR=$work/state-join nsenter --net=/run/netns/nd-demo-jnode "$@"; }
	newns nd-demo-app
	ip -n nd-demo-app link set lo up # what the runtime does (containerd's loopback network, Podman itself)
	say "cnitool add nd-bridge /run/netns/nd-demo-app"
	onjn cnitool add nd-bridge /run/netns/nd-demo-app >/dev/null
	teardown+=("onjn cnitool del nd-bridge /run/netns/nd-demo-app")
	local app id
	app=$(ip -n nd-demo-app -4 -br addr show eth0 | awk '{print $3}' | cut -d/ -f1)
	id="cnitool-$(printf %s /run/netns/nd-demo-app | sha512sum | cut -c1-20)" # cnitool's container ID
	newns nd-demo-sidecar
	say "CNI_ARGS='IgnoreUnknown=1;TARGET=$id' cnitool add nd-joinns /run/netns/nd-demo-sidecar"
	CNI_ARGS="IgnoreUnknown=1;TARGET=$id" onjn cnitool add nd-joinns /run/netns/nd-demo-sidecar | upto 2000
	echo
	teardown+=("onjn cnitool del nd-joinns /run/netns/nd-demo-sidecar")
	say "the sidecar's path shows the app's namespace"
	stat -L -c '  %n inode %i' /run/netns/nd-demo-app /run/netns/nd-demo-sidecar
	sees nd-demo-sidecar
	echo "The sidecar serves on port 9090: the node reaches it at the app's address, the app on its loopback:"
	serve nd-demo-sidecar 0.0.0.0:9090 "hello from the sidecar, at the app's address"
	fetch nd-demo-jnode "http://$app:9090/"
	fetch nd-demo-app http://127.0.0.1:9090/
	say "cnitool del nd-joinns /run/netns/nd-demo-sidecar"
	onjn cnitool del nd-joinns /run/netns/nd-demo-sidecar
	echo "The app is untouched by the sidecar's DEL:"
	sees nd-demo-app
	reach nd-demo-jnode "$app"
}

demo_macvlan() {
	section "macvlan: Docker's macvlan driver (containers appear on the LAN with MACs of their own)"
	echo "The \"node\" is a throw-away namespace whose LAN link is a veth (mvlan0, 192.168.220.2/24);"
	echo "its peer plays another host on the LAN and the router (192.168.220.1). cnitool runs in the node."
	nodelan nd-demo-mvnode mvlan0 192.168.220.2/24 nd-demo-mvlan 192.168.220.1/24
	onmv() { NETDRIVERS_STATE_DIR=$work/state-macvlan nsenter --net=/run/netns/nd-demo-mvnode "$@"; }
	mvattach() {
		say "cnitool add $1 /run/netns/$2"
		onmv cnitool add "$1" "/run/netns/$2" | upto 2000
		echo
		teardown+=("onmv cnitool del $1 /run/netns/$2")
	}
	mvip() { ip -n "$1" -4 -br addr show eth0 | awk '{print $3}' | cut -d/ -f1; }
	sed 's#"master": "eth1"#"master": "mvlan0"#' conf-examples/macvlan.conflist | ownstore "$work/ipam" >"$NETCONFPATH/macvlan.conflist"
	say "macvlan.conflist: \"master\": \"mvlan0\"   # the one field a user sets; \"hostShim\": true"
	newns nd-demo-mva
	newns nd-demo-mvb
	mvattach nd-macvlan nd-demo-mva
	mvattach nd-macvlan nd-demo-mvb
	sees nd-demo-mva
	say "ip -n nd-demo-mva -d link show eth0   # a macvlan on the node's mvlan0, its own MAC"
	ip -n nd-demo-mva -d link show eth0 | sed -n '1,3p'
	local a b
	a=$(mvip nd-demo-mva)
	b=$(mvip nd-demo-mvb)
	echo "The containers reach each other and the LAN; the node reaches them through its shim:"
	reach nd-demo-mva "$b"
	reach nd-demo-mva 192.168.220.1
	reach nd-demo-mvnode "$a"
	reach nd-demo-mvnode "$b"
	reach nd-demo-mvb 192.168.220.2
	say "ip -n nd-demo-mvnode -br addr; ip -n nd-demo-mvnode route   # the shim: a macvlan of the node's own"
	ip -n nd-demo-mvnode -br addr
	ip -n nd-demo-mvnode route
	echo "Without hostShim (what Docker and the reference plugin give), the node cannot reach its containers:"
	sed -e 's#"master": "eth1"#"master": "mvlan0"#' -e 's#"hostShim": true#"hostShim": false#' \
		-e 's#"nd-macvlan"#"nd-macvlan-noshim"#' -e 's#"192.168.220.100"#"192.168.220.200"#' -e 's#"192.168.220.199"#"192.168.220.249"#' \
		conf-examples/macvlan.conflist | ownstore "$work/ipam" >"$NETCONFPATH/macvlan-noshim.conflist"
	newns nd-demo-mvc
	mvattach nd-macvlan-noshim nd-demo-mvc
	reach nd-demo-mvnode "$(mvip nd-demo-mvc)"
	reach nd-demo-mvc 192.168.220.1
	say "cnitool del ... (all three)"
	onmv cnitool del nd-macvlan-noshim /run/netns/nd-demo-mvc
	onmv cnitool del nd-macvlan /run/netns/nd-demo-mva
	onmv cnitool del nd-macvlan /run/netns/nd-demo-mvb
	say "ip -n nd-demo-mvnode -br link   # the shim went with the last attachment"
	ip -n nd-demo-mvnode -br link
}

demo_bridge() {
	section "host-local-bridge: Docker's bridge driver (veth into a bridge, NAT, published ports)"
	echo "The \"node\" is a throw-away namespace with a LAN link (lan0, 198.51.100.10/24) whose peer"
	echo "plays another host on the LAN; cnitool runs inside the node, so this machine's own firewall"
	echo "and sysctls are never touched."
	nodelan nd-demo-brnode lan0 198.51.100.10/24 nd-demo-lan 198.51.100.20/24
	onbr() { NETDRIVERS_STATE_DIR=$work/state-bridge nsenter --net=/run/netns/nd-demo-brnode "$@"; }
	newns nd-demo-web
	newns nd-demo-client
	say "CAP_ARGS='{\"portMappings\":[{\"hostPort\":8080,\"containerPort\":80}]}' cnitool add nd-bridge /run/netns/nd-demo-web"
	CAP_ARGS='{"portMappings":[{"hostPort":8080,"containerPort":80}]}' onbr cnitool add nd-bridge /run/netns/nd-demo-web | upto 2000
	echo
	teardown+=("CAP_ARGS='{\"portMappings\":[{\"hostPort\":8080,\"containerPort\":80}]}' onbr cnitool del nd-bridge /run/netns/nd-demo-web")
	say "cnitool add nd-bridge /run/netns/nd-demo-client"
	onbr cnitool add nd-bridge /run/netns/nd-demo-client >/dev/null
	teardown+=("onbr cnitool del nd-bridge /run/netns/nd-demo-client")
	sees nd-demo-web
	local web
	web=$(ip -n nd-demo-web -4 -br addr show eth0 | awk '{print $3}' | cut -d/ -f1)
	say "ip -n nd-demo-brnode -br link   # the bridge nd-br0 and one veth per container"
	ip -n nd-demo-brnode -br link
	echo "The containers reach each other, the gateway, and the LAN (masqueraded):"
	reach nd-demo-client "$web"
	reach nd-demo-client 10.222.0.1
	reach nd-demo-client 198.51.100.20
	echo "nd-demo-web serves HTTP on port 80, published as 8080 on the node:"
	serve nd-demo-web 0.0.0.0:80 "hello from the bridge container $web"
	echo "  from the node itself, via 127.0.0.1 and via its own address:"
	fetch nd-demo-brnode http://127.0.0.1:8080/
	fetch nd-demo-brnode http://198.51.100.10:8080/
	echo "  from another host on the LAN:"
	fetch nd-demo-lan http://198.51.100.10:8080/
	echo "  from the other container, through the node's address (hairpin NAT):"
	fetch nd-demo-client http://198.51.100.10:8080/
	echo "Unpublished ports stay closed to the LAN (gatewayMode nat, Docker's default):"
	ip -n nd-demo-lan route add 10.222.0.0/24 via 198.51.100.10
	say "ip netns exec nd-demo-lan curl -s --max-time 1 http://$web:80/"
	ip netns exec nd-demo-lan curl -s --max-time 1 "http://$web:80/" || echo "  (no answer: filtered)"
	say "ip netns exec nd-demo-brnode nft list table inet netdrivers | sed -n 1,30p   # the rules, per attachment"
	ip netns exec nd-demo-brnode nft list table inet netdrivers | sed -n 1,30p
	detach_br() { say "cnitool del nd-bridge /run/netns/$1"; CAP_ARGS=$2 onbr cnitool del nd-bridge "/run/netns/$1"; }
	detach_br nd-demo-web '{"portMappings":[{"hostPort":8080,"containerPort":80}]}'
	detach_br nd-demo-client '{}'
	say "ip -n nd-demo-brnode -br link   # the veths are gone; the bridge stays, as Docker's does"
	ip -n nd-demo-brnode -br link
}

demo_none
demo_bridge
demo_hostns
demo_joinns
demo_macvlan
section "done: every namespace and attachment removed"
