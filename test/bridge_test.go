package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netlink"

	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// TestBridgeLifecycle: ADD, CHECK, DEL, DEL for every spec version, with
// the reference result shape, the store and the host back to before; an
// IPv4-only attachment has no IPv6 link-local.
func TestBridgeLifecycle(t *testing.T) {
	nettest.RequireRoot(t)
	for _, ver := range cniplugin.SupportedVersions {
		t.Run(ver, func(t *testing.T) {
			t.Parallel()
			n := newNode(t)
			list := bridgeConf(t, "lc", "nftables", "10.10.0.0/24", nil)
			list.CNIVersion = ver
			n.warm(t, list)
			before := n.hostState(t)
			c := n.attach(t, list, nil)
			if !strings.HasPrefix(c.addr(false), "10.10.0.") {
				t.Fatalf("container address %q not from the pool", c.addr(false))
			}
			if got := nettest.Addrs(t, c.ns, "eth0"); len(got) != 1 || got[0].String() != c.addr(false)+"/24" {
				t.Errorf("eth0 addresses = %v", got)
			}
			if atLeast(ver, "0.3.0") {
				if len(c.res.Interfaces) != 3 || c.res.Interfaces[2].Sandbox != c.ns.Path() || c.res.Interfaces[0].Sandbox != "" {
					t.Errorf("interfaces = %+v, want bridge, host veth, container", c.res.Interfaces)
				}
				if *c.res.IPs[0].Interface != 2 || c.res.IPs[0].Gateway.String() != "10.10.0.1" {
					t.Errorf("ip = %+v", c.res.IPs[0])
				}
			}
			nettest.Reachable(t, c.ns, "10.10.0.1")
			if ll := linkLocals(t, c.ns, "eth0"); len(ll) != 0 {
				t.Errorf("IPv4-only attachment has IPv6 link-local %v (Docker disables IPv6 there)", ll)
			}
			if atLeast(ver, "0.3.0") {
				assertHostNoIPv6(t, n, c)
				for _, i := range c.res.Interfaces[:2] { // the bridge and the host veth
					assertMACKept(t, n.host, i.Name, i.Mac)
				}
			}
			if atLeast(ver, "0.4.0") {
				n.cni.MustCheck(t, list, c.rt)
			}
			n.detach(t, list, c)
			// The veth went through the node's link reaper, which stays
			// for later calls (pkg/reaper).
			nodeHelper(t, n.host, "@netdrivers-link-reaper")
			n.detach(t, list, c)
			if e := storeEntries(t, list); len(e) != 0 {
				t.Errorf("store entries left: %v", e)
			}
			if nettest.HasLink(t, c.ns, "eth0") {
				t.Error("eth0 left in the container")
			}
			if d := stateDiff(before, n.hostState(t)); d != "" {
				t.Errorf("host state after DEL differs:\n%s", d)
			}
		})
	}
}

// stateDiff is nettest.DiffLines of two host states. Tests take "before"
// after a warm-up attachment, so the bridge and the suite's table skeleton
// (which stay after the last attachment, as the reference bridge's do) are
// already in it.
func stateDiff(before, after string) string { return nettest.DiffLines(before, after) }

// stateAdded lists only the lines after has and before lacks.
func stateAdded(before, after string) string {
	var out []string
	for _, l := range strings.Split(stateDiff(before, after), "\n") {
		if strings.HasPrefix(l, "+ ") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestBridgeTraffic: two containers reach each other and the gateway;
// outbound traffic to the LAN is masqueraded; published TCP and UDP ports
// are reachable from another host, from the node via 127.0.0.1 and its own
// address, from a container on the same bridge and by hairpin; unpublished
// ports are filtered in nat mode. Both backends, with br_netfilter calling
// iptables (the default here) and without.
func TestBridgeTraffic(t *testing.T) {
	nettest.RequireRoot(t)
	for _, backend := range backends {
		for _, brnf := range []string{"1", "0"} {
			t.Run(backend+"/bridge-nf-call-iptables="+brnf, func(t *testing.T) {
				t.Parallel()
				n := newNode(t)
				n.host.Sysctl(t, "net/bridge/bridge-nf-call-iptables", brnf)
				list := bridgeConf(t, "web", backend, "10.20.0.0/24", nil)
				a := n.attach(t, list, ports("tcp//8080/80", "udp//5353/53"))
				b := n.attach(t, list, nil)
				t.Cleanup(func() { n.detach(t, list, a); n.detach(t, list, b) })
				nettest.Listen(t, a.ns, "tcp", ":80", "A")
				nettest.Listen(t, a.ns, "udp", ":53", "A-udp")
				nettest.Listen(t, a.ns, "tcp", ":81", "unpublished")
				nettest.Listen(t, n.outside, "tcp", ":9000", "LAN")

				nettest.Reachable(t, a.ns, "10.20.0.1")
				nettest.Reachable(t, a.ns, b.addr(false))
				// Outbound: the LAN host sees the node's address (masquerade).
				wantFrom(t, a.ns, "tcp", lanOutside+":9000", "LAN "+lanNode+":")
				// Published port from another host keeps the client's address.
				wantFrom(t, n.outside, "tcp", lanNode+":8080", "A "+lanOutside+":")
				wantFrom(t, n.outside, "udp", lanNode+":5353", "A-udp "+lanOutside+":")
				// From the node itself: its LAN address and 127.0.0.1.
				wantFrom(t, n.host, "tcp", lanNode+":8080", "A ")
				wantFrom(t, n.host, "tcp", "127.0.0.1:8080", "A ")
				// From a container on the same bridge via the node's address.
				wantFrom(t, b.ns, "tcp", lanNode+":8080", "A ")
				// Hairpin: the container reaches itself through its published port.
				wantFrom(t, a.ns, "tcp", lanNode+":8080", "A ")
				// The unpublished port is filtered from outside, open on the bridge.
				if out, err := nettest.Dial(n.outside, "tcp", a.addr(false)+":81", 500*time.Millisecond); err == nil {
					t.Errorf("unpublished port reachable from outside in nat mode: %q", out)
				}
				wantFrom(t, b.ns, "tcp", a.addr(false)+":81", "unpublished ")
				n.cni.MustCheck(t, list, a.rt)
			})
		}
	}
}

// wantFrom dials from ns and expects the server's answer to start with want.
func wantFrom(t *testing.T, ns *nettest.NS, network, addr, want string) {
	t.Helper()
	nettest.Eventually(t, 3*time.Second, fmt.Sprintf("%s %s from %s", network, addr, ns.Name), func() error {
		got, err := nettest.Dial(ns, network, addr, 500*time.Millisecond)
		if err != nil {
			return err
		}
		if !strings.HasPrefix(got, want) {
			return fmt.Errorf("got %q, want prefix %q", got, want)
		}
		return nil
	})
}

// TestBridgeGatewayModes: nat-unprotected leaves unpublished ports open;
// routed does no NAT (the LAN sees the container's own address); isolated
// has no way out and refuses published ports.
func TestBridgeGatewayModes(t *testing.T) {
	eachBackend(t, func(t *testing.T, n *node, backend string) {
		nettest.AddRoute(t, n.outside, "10.31.0.0/24", lanNode) // the LAN routes the pod CIDR to the node
		nettest.Listen(t, n.outside, "tcp", ":9000", "LAN")

		unprot := bridgeConf(t, "unprot", backend, "10.30.0.0/24", map[string]any{"gatewayMode": "nat-unprotected"})
		u := n.attach(t, unprot, nil)
		nettest.Listen(t, u.ns, "tcp", ":81", "open")
		nettest.AddRoute(t, n.outside, "10.30.0.0/24", lanNode)
		wantFrom(t, n.outside, "tcp", u.addr(false)+":81", "open ")

		routed := bridgeConf(t, "routed", backend, "10.31.0.0/24", map[string]any{"gatewayMode": "routed"})
		r := n.attach(t, routed, nil)
		wantFrom(t, r.ns, "tcp", lanOutside+":9000", "LAN "+r.addr(false)+":")
		nettest.Listen(t, r.ns, "tcp", ":82", "routed")
		wantFrom(t, n.outside, "tcp", r.addr(false)+":82", "routed ")

		iso := bridgeConf(t, "iso", backend, "10.32.0.0/24", map[string]any{"gatewayMode": "isolated"})
		i1, i2 := n.attach(t, iso, nil), n.attach(t, iso, nil)
		nettest.Reachable(t, i1.ns, i2.addr(false))
		if _, err := nettest.Dial(i1.ns, "tcp", lanOutside+":9000", 500*time.Millisecond); err == nil {
			t.Error("isolated container reached the LAN")
		}
		if got := nettest.Addrs(t, n.host, defaultBridge("iso")); len(got) != 0 {
			t.Errorf("isolated bridge has addresses %v", got)
		}
		_, err := n.cni.AddNetworkList(context.Background(), iso, withPorts(nettest.Runtime(t, nettest.NewNS(t), "eth0"), ports("tcp//8081/80")))
		if nettest.Code(err) != 7 {
			t.Errorf("ports on an isolated network: %v, want code 7", err)
		}
		n.detach(t, unprot, u)
		n.detach(t, routed, r)
		n.detach(t, iso, i1)
		n.detach(t, iso, i2)
	})
}

// TestBridgeIsolation: icc false keeps containers of one bridge apart (the
// gateway still answers); two networks cannot reach each other, but each
// reaches the other's published port through the node's address.
func TestBridgeIsolation(t *testing.T) {
	eachBackend(t, func(t *testing.T, n *node, backend string) {
		noicc := bridgeConf(t, "noicc", backend, "10.40.0.0/24", map[string]any{"icc": false})
		a, b := n.attach(t, noicc, nil), n.attach(t, noicc, nil)
		nettest.Reachable(t, a.ns, "10.40.0.1")
		nettest.Unreachable(t, a.ns, b.addr(false))

		other := bridgeConf(t, "other", backend, "10.41.0.0/24", nil)
		o := n.attach(t, other, ports("tcp//8090/80"))
		nettest.Listen(t, o.ns, "tcp", ":80", "O")
		nettest.Unreachable(t, a.ns, o.addr(false))
		nettest.Unreachable(t, o.ns, a.addr(false))
		wantFrom(t, a.ns, "tcp", lanNode+":8090", "O ")
		// Only the isolation stops traffic into a network that filters
		// nothing itself.
		open := bridgeConf(t, "open", backend, "10.42.0.0/24", map[string]any{"gatewayMode": "nat-unprotected"})
		op := n.attach(t, open, nil)
		nettest.Listen(t, op.ns, "tcp", ":80", "open")
		wantFrom(t, n.host, "tcp", op.addr(false)+":80", "open ")
		if out, err := nettest.Dial(o.ns, "tcp", op.addr(false)+":80", 500*time.Millisecond); err == nil {
			t.Errorf("network %q reached network %q: %q", "other", "open", out)
		}
		nettest.Unreachable(t, op.ns, o.addr(false))
		n.detach(t, open, op)
		n.detach(t, other, o)
		n.detach(t, noicc, a)
		n.detach(t, noicc, b)
	})
}

// defaultBridge is the plugin's bridge name for a network without "bridge".
func defaultBridge(network string) string { return "nd-" + netconf.NetworkHash(network)[:8] }

func withPorts(rt *libcni.RuntimeConf, p []map[string]any) *libcni.RuntimeConf {
	rt.CapabilityArgs = map[string]any{"portMappings": p}
	return rt
}

// containerHasDefault reports whether ns has a default route for v4/v6.
func containerHasDefault(t *testing.T, ns *nettest.NS, v6 bool) int {
	family := netlink.FAMILY_V4
	if v6 {
		family = netlink.FAMILY_V6
	}
	routes, err := ns.NL(t).RouteListFiltered(family, &netlink.Route{Dst: nil}, netlink.RT_FILTER_DST)
	if err != nil {
		t.Fatal(err)
	}
	return len(routes)
}
