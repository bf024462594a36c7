//go:build soak

package soak

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netlink"

	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// Addresses of the soak node: an uplink to a LAN namespace (where
// published ports lead) and a macvlan parent on its own segment, whose
// far end also sits in the LAN namespace.
const (
	upNode   = "198.51.100.1"
	upLAN    = "198.51.100.2"
	mvLAN    = "203.0.113.254"
	mvParent = "mvpar0"
)

// network is one network of the soak.
type network struct {
	name, plugin string
	list         *libcni.NetworkConfigList
	dataDir      string // its address store, "" without one
	ownsAddrs    bool   // attachments hold addresses no other may hold
	ports        bool   // takes portMappings
	gc           bool   // cniVersion >= 1.1.0: GC and STATUS
	pingFrom     string // "node" or "lan": where its containers are reached from
}

// node is the throwaway node and its networks.
type node struct {
	host, lan *nettest.NS
	cni       *nettest.CNI // the runtime, with its result cache
	fresh     *nettest.CNI // a runtime without the cache (containerd's second DEL)
	nets      []*network
}

func newNode(t *testing.T) *node {
	t.Helper()
	n := &node{host: nettest.NewNS(t), lan: nettest.NewNS(t)}
	nettest.NewVeth(t, n.host, "up0", upNode+"/24", n.lan, "eth0", upLAN+"/24")
	nettest.NewVeth(t, n.host, mvParent, "", n.lan, "mvlan0", mvLAN+"/24")
	n.cni = nettest.NewCNI(t, n.host)
	n.cni.MaxCalls = 64
	n.fresh = nettest.NewCNI(t, n.host)
	n.fresh.StateDir, n.fresh.MaxCalls = n.cni.StateDir, 64
	for _, l := range []struct {
		ns   *nettest.NS
		name string
	}{{n.host, "up0"}, {n.host, mvParent}, {n.lan, "eth0"}, {n.lan, "mvlan0"}} {
		nettest.Eventually(t, 5*time.Second, "link-local address on "+l.name, func() error {
			addrs, err := l.ns.NL(t).AddrList(nettest.Link(t, l.ns, l.name), netlink.FAMILY_V6)
			if err != nil || len(addrs) == 0 {
				return fmt.Errorf("none yet (%v)", err)
			}
			return nil
		})
	}
	n.nets = n.networks(t)
	return n
}

// networks are the soak's networks: both bridge backends with published
// ports (one dual-stack, one with a pool small enough to run out),
// macvlan with the built-in allocator and with the host shim on one
// parent, none, hostns with port reservations, and joinns.
func (n *node) networks(t *testing.T) []*network {
	t.Helper()
	portCap := map[string]bool{"portMappings": true}
	hostLocal := func(kv ...any) map[string]any {
		m := map[string]any{"type": "host-local", "dataDir": t.TempDir()}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	defs := []struct {
		net    network
		ver    string
		plugin map[string]any
	}{
		{network{name: "soak-br-nft", plugin: "host-local-bridge", ownsAddrs: true, ports: true, gc: true, pingFrom: "node"}, "1.1.0",
			map[string]any{"firewallBackend": "nftables", "capabilities": portCap, "ipam": hostLocal(
				"ranges", [][]map[string]string{{{"subnet": "10.210.0.0/26"}}, {{"subnet": "fd00:210::/64"}}})}},
		{network{name: "soak-br-ipt", plugin: "host-local-bridge", ownsAddrs: true, ports: true, pingFrom: "node"}, "1.0.0",
			map[string]any{"firewallBackend": "iptables", "capabilities": portCap, "ipam": hostLocal(
				"subnet", "10.211.0.0/24", "rangeStart", "10.211.0.2", "rangeEnd", "10.211.0.7")}},
		{network{name: "soak-mv", plugin: "macvlan", ownsAddrs: true, gc: true, pingFrom: "lan"}, "1.1.0",
			map[string]any{"master": mvParent, "ipam": hostLocal(
				"subnet", "203.0.113.0/24", "rangeStart", "203.0.113.10", "rangeEnd", "203.0.113.39")}},
		{network{name: "soak-mv-shim", plugin: "macvlan", ownsAddrs: true, gc: true, pingFrom: "node"}, "1.1.0",
			map[string]any{"master": mvParent, "hostShim": true, "ipam": hostLocal(
				"subnet", "203.0.113.0/24", "rangeStart", "203.0.113.40", "rangeEnd", "203.0.113.69")}},
		{network{name: "soak-none", plugin: "none"}, "0.4.0", map[string]any{}},
		{network{name: "soak-hostns", plugin: "hostns", ports: true, gc: true}, "1.1.0",
			map[string]any{"allowHostNetwork": true, "capabilities": portCap}},
		{network{name: "soak-joinns", plugin: "joinns", gc: true}, "1.1.0", map[string]any{}},
	}
	var out []*network
	for _, d := range defs {
		net := d.net
		d.plugin["type"] = net.plugin
		if ipam, ok := d.plugin["ipam"].(map[string]any); ok {
			net.dataDir = filepath.Join(ipam["dataDir"].(string), net.name)
		}
		net.list = nettest.ConfList(t, map[string]any{"cniVersion": d.ver, "name": net.name, "plugins": []any{d.plugin}})
		out = append(out, &net)
	}
	return out
}

// baseline is what the node holds with no attachment: taken after one
// attachment on each network came and went, so that what stays after the
// last one (bridges, the suite's tables, the store dirs) is in it.
type baseline struct {
	state string
	files map[string]bool
}

func (n *node) baseline(t *testing.T) baseline {
	t.Helper()
	b := baseline{state: nettest.NodeState(t, n.host), files: map[string]bool{}}
	for _, f := range nettest.StateFiles(t, n.cni.StateDir) {
		b.files[f] = true
	}
	return b
}

// leaks lists everything the node holds beyond the baseline once every
// attachment is gone: links, bridge ports, addresses, routes, rules of
// both packet filters, state files (reservations, records, shim
// references), address store entries, and mounts on the soak's container
// paths.
func (n *node) leaks(t *testing.T, b baseline, paths []string) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(nettest.DiffLines(b.state, nettest.NodeState(t, n.host)), "\n") {
		if l != "" && !strings.Contains(l, "fe80:") { // the kernel's own link-local addresses
			out = append(out, "node: "+l)
		}
	}
	for _, f := range nettest.StateFiles(t, n.cni.StateDir) {
		if !b.files[f] {
			out = append(out, "state file: "+f)
		}
	}
	for _, net := range n.nets {
		if net.dataDir != "" {
			for _, e := range nettest.StoreEntries(t, net.dataDir) {
				out = append(out, fmt.Sprintf("store entry of %s: %s", net.name, e))
			}
		}
	}
	for _, m := range nettest.Mounts(t, nettest.NSDir) {
		point, _, _ := strings.Cut(m, " ")
		if i := sort.SearchStrings(paths, point); i < len(paths) && paths[i] == point {
			out = append(out, "mount: "+m)
		}
	}
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			out = append(out, "container path: "+p)
		}
	}
	return out
}

// addrOf parses a result address.
func addrOf(ip []byte) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}
