package test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// TestBridgeDualStackStaticAndMAC: one address per range set, a link-local
// too, v6 traffic
// through the gateway and a published port over IPv6; a requested IP and
// MAC from each of the capability, args.cni and CNI_ARGS.
func TestBridgeDualStackStaticAndMAC(t *testing.T) {
	eachBackend(t, func(t *testing.T, n *node, backend string) {
		list := bridgeConf(t, "dual", backend, "10.50.0.0/24", map[string]any{"ipam": map[string]any{
			"subnet": nil, "ranges": [][]map[string]any{{{"subnet": "10.50.0.0/24"}}, {{"subnet": "2001:db8:50::/64"}}}}})
		c := n.attach(t, list, ports("tcp//8080/80"))
		if c.addr(true) == "" || c.addr(false) == "" {
			t.Fatalf("want v4 and v6 addresses, got %+v", c.res.IPs)
		}
		nettest.Reachable(t, c.ns, "2001:db8:50::1")
		assertHostNoIPv6(t, n, c) // the bridge port needs none for IPv6 to pass
		if len(linkLocals(t, c.ns, "eth0")) != 1 {
			t.Errorf("dual-stack attachment: link-local addresses %v, want one", linkLocals(t, c.ns, "eth0"))
		}
		nettest.Listen(t, c.ns, "tcp", ":80", "six")
		wantFrom(t, n.outside, "tcp", "[2001:db8:51::1]:8080", "six [2001:db8:51::2]:")
		if containerHasDefault(t, c.ns, true) != 1 || containerHasDefault(t, c.ns, false) != 1 {
			t.Error("want one default route per family")
		}
		n.detach(t, list, c)

		ns := nettest.NewNS(t)
		rt := nettest.Runtime(t, ns, "eth0")
		rt.CapabilityArgs = map[string]any{"ips": []string{"10.50.0.77/24", "2001:db8:50::77/64"}, "mac": "02:42:0a:32:00:4d"}
		got := n.cni.MustAdd(t, list, rt)
		if s := fmt.Sprint(got); !strings.Contains(s, "10.50.0.77") || !strings.Contains(s, "2001:db8:50::77") {
			t.Errorf("static IPs not honoured: %s", s)
		}
		if mac := nettest.Link(t, ns, "eth0").Attrs().HardwareAddr.String(); mac != "02:42:0a:32:00:4d" {
			t.Errorf("MAC = %s", mac)
		}
		n.cni.MustDel(t, list, rt)

		ns2 := nettest.NewNS(t)
		rt2 := nettest.Runtime(t, ns2, "eth0")
		rt2.Args = [][2]string{{"IgnoreUnknown", "1"}, {"IP", "10.50.0.88"}, {"MAC", "02:00:00:00:00:88"}}
		got = n.cni.MustAdd(t, list, rt2)
		if !strings.Contains(fmt.Sprint(got), "10.50.0.88") || nettest.Link(t, ns2, "eth0").Attrs().HardwareAddr.String() != "02:00:00:00:00:88" {
			t.Errorf("CNI_ARGS IP/MAC not honoured: %v", got)
		}
		// The same static IP again is refused, and leaves nothing.
		ns3 := nettest.NewNS(t)
		rt3 := nettest.Runtime(t, ns3, "eth0")
		rt3.Args = [][2]string{{"IP", "10.50.0.88"}}
		if _, err := n.cni.AddNetworkList(context.Background(), list, rt3); err == nil {
			t.Error("duplicate static IP accepted")
		}
		if nettest.HasLink(t, ns3, "eth0") {
			t.Error("failed ADD left eth0")
		}
		n.cni.MustDel(t, list, rt3)
		n.cni.MustDel(t, list, rt2)
	})
}

// TestBridgeTwoNetworks: eth0 and eth1 of one container on two networks;
// eth1 adds no second default route; DEL of one leaves the other working.
func TestBridgeTwoNetworks(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	n := newNode(t)
	front := bridgeConf(t, "front", "nftables", "10.60.0.0/24", nil)
	back := bridgeConf(t, "back", "nftables", "10.61.0.0/24", nil)
	ns := nettest.NewNS(t)
	rt0 := nettest.Runtime(t, ns, "eth0")
	rt1 := &libcni.RuntimeConf{ContainerID: rt0.ContainerID, NetNS: ns.Path(), IfName: "eth1"}
	n.cni.MustAdd(t, front, rt0)
	n.cni.MustAdd(t, back, rt1)
	if got := containerHasDefault(t, ns, false); got != 1 {
		t.Errorf("default routes = %d, want 1", got)
	}
	nettest.Reachable(t, ns, "10.61.0.1")
	n.cni.MustCheck(t, back, rt1)
	n.cni.MustDel(t, back, rt1)
	nettest.Reachable(t, ns, "10.60.0.1")
	n.cni.MustCheck(t, front, rt0)
	n.cni.MustDel(t, front, rt0)
}

// TestBridgeForwardDropHost: a node whose iptables FORWARD policy is DROP
// (Docker's, firewalld's) with br_netfilter calling iptables still passes
// our traffic, and its policy and rules are untouched afterwards.
func TestBridgeForwardDropHost(t *testing.T) {
	eachBackend(t, func(t *testing.T, n *node, backend string) {
		n.host.Sysctl(t, "net/bridge/bridge-nf-call-iptables", "1")
		n.host.MustRun(t, "iptables", "-P", "FORWARD", "DROP")
		n.host.MustRun(t, "iptables", "-A", "FORWARD", "-s", "192.0.2.99", "-j", "ACCEPT")
		policy := n.host.MustRun(t, "iptables", "-S", "FORWARD")
		list := bridgeConf(t, "fwd", backend, "10.70.0.0/24", nil)
		a := n.attach(t, list, ports("tcp//8080/80"))
		b := n.attach(t, list, nil)
		nettest.Listen(t, a.ns, "tcp", ":80", "A")
		nettest.Listen(t, n.outside, "tcp", ":9000", "LAN")
		nettest.Reachable(t, a.ns, b.addr(false))
		wantFrom(t, a.ns, "tcp", lanOutside+":9000", "LAN ")
		wantFrom(t, n.outside, "tcp", lanNode+":8080", "A ")
		wantFrom(t, b.ns, "tcp", lanNode+":8080", "A ")
		n.detach(t, list, a)
		n.detach(t, list, b)
		gc(t, n, list) // the last network's leftovers may go with GC
		after := n.host.MustRun(t, "iptables", "-S", "FORWARD")
		if strings.Contains(after, "-P FORWARD DROP") != true || !strings.Contains(after, "-s 192.0.2.99/32 -j ACCEPT") {
			t.Errorf("host FORWARD chain changed:\nbefore %s\nafter %s", policy, after)
		}
	})
}

// TestBridgeParallel: 32 parallel ADDs then 32 parallel DELs on one
// network: distinct addresses, one bridge, nothing left.
func TestBridgeParallel(t *testing.T) {
	eachBackend(t, func(t *testing.T, n *node, backend string) {
		list := bridgeConf(t, "par", backend, "10.80.0.0/24", nil)
		n.warm(t, list)
		before := n.hostState(t)
		const N = 32
		ctrs := make([]*container, N)
		for i := range ctrs {
			ns := nettest.NewNS(t)
			ctrs[i] = &container{ns: ns, rt: nettest.Runtime(t, ns, "eth0")}
			ctrs[i].rt.CapabilityArgs = map[string]any{"portMappings": ports(fmt.Sprintf("tcp//%d/80", 20000+i))}
		}
		var wg sync.WaitGroup
		errs := make(chan error, N)
		for _, c := range ctrs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := n.cni.AddNetworkList(context.Background(), list, c.rt); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("parallel ADD: %v", err)
		}
		seen := map[string]bool{}
		for _, c := range ctrs {
			a := nettest.Addrs(t, c.ns, "eth0")
			if len(a) != 1 || seen[a[0].String()] {
				t.Fatalf("duplicate or missing address %v", a)
			}
			seen[a[0].String()] = true
		}
		if got := len(storeEntries(t, list)); got != N {
			t.Errorf("store holds %d entries, want %d", got, N)
		}
		errs = make(chan error, N)
		for _, c := range ctrs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := n.cni.DelNetworkList(context.Background(), list, c.rt); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("parallel DEL: %v", err)
		}
		if e := storeEntries(t, list); len(e) != 0 {
			t.Errorf("store entries left: %v", e)
		}
		if d := stateDiff(before, n.hostState(t)); d != "" {
			t.Error(d)
		}
	})
}

// TestBridgeDelAfterNamespaceGone: the netns vanished and the runtime has
// no prevResult (containerd's second DEL): every rule, address and link
// goes anyway.
func TestBridgeDelAfterNamespaceGone(t *testing.T) {
	eachBackend(t, func(t *testing.T, n *node, backend string) {
		list := bridgeConf(t, "gone", backend, "10.90.0.0/24", nil)
		n.warm(t, list)
		before := n.hostState(t)
		c := n.attach(t, list, ports("tcp//8080/80", "udp//8081/81"))
		if err := c.ns.Remove(); err != nil {
			t.Fatal(err)
		}
		direct := &libcni.RuntimeConf{ContainerID: c.rt.ContainerID, IfName: "eth0"} // no netns
		delNoPrev(t, n, list, direct)
		if e := storeEntries(t, list); len(e) != 0 {
			t.Errorf("store entries left: %v", e)
		}
		if d := stateDiff(before, n.hostState(t)); d != "" {
			t.Error(d)
		}
		// The ports are free again.
		c2 := n.attach(t, list, ports("tcp//8080/80"))
		n.detach(t, list, c2)
	})
}

// delNoPrev runs DEL as containerd's second DEL: no prevResult, no netns.
func delNoPrev(t *testing.T, n *node, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) {
	t.Helper()
	fresh := nettest.NewCNI(t, n.host) // a runtime without the cached result
	fresh.StateDir = n.cni.StateDir
	if err := fresh.DelNetworkList(context.Background(), list, rt); err != nil {
		t.Fatalf("DEL without netns and prevResult: %v", err)
	}
}

// TestBridgePortConflicts: a host port held by another attachment, and one
// a host process listens on, are refused with 101 and leave nothing.
func TestBridgePortConflicts(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	n := newNode(t)
	list := bridgeConf(t, "ports", "nftables", "10.91.0.0/24", nil)
	a := n.attach(t, list, ports("tcp//8080/80"))
	before := n.hostState(t)
	for _, p := range []string{"tcp//8080/81", "tcp/" + lanNode + "/8080/82"} {
		ns := nettest.NewNS(t)
		rt := withPorts(nettest.Runtime(t, ns, "eth0"), ports(p))
		_, err := n.cni.AddNetworkList(context.Background(), list, rt)
		if nettest.Code(err) != 101 || !strings.Contains(err.Error(), "8080") {
			t.Errorf("overlapping %s: %v, want 101 naming the port", p, err)
		}
		if nettest.HasLink(t, ns, "eth0") || n.hostState(t) != before {
			t.Errorf("refused ADD left state behind")
		}
		n.cni.MustDel(t, list, rt)
	}
	// UDP on the same number is another socket.
	u := n.attach(t, list, ports("udp//8080/80"))
	nettest.Listen(t, n.host, "tcp", "127.0.0.1:7070", "host-process")
	ns := nettest.NewNS(t)
	rt := withPorts(nettest.Runtime(t, ns, "eth0"), ports("tcp//7070/80"))
	if _, err := n.cni.AddNetworkList(context.Background(), list, rt); nettest.Code(err) != 101 {
		t.Errorf("port a host process listens on: %v, want 101", err)
	}
	n.cni.MustDel(t, list, rt)
	n.detach(t, list, u)
	n.detach(t, list, a)
}

// TestBridgeUDPConntrackFlush: a UDP flow to a host port that existed
// before the port was published (and would otherwise stay pinned to the
// old path by conntrack) reaches the container after ADD.
func TestBridgeUDPConntrackFlush(t *testing.T) {
	eachBackend(t, func(t *testing.T, n *node, backend string) {
		list := bridgeConf(t, "udp", backend, "10.92.0.0/24", nil)
		var conn net.Conn
		n.outside.MustDo(t, func() (err error) {
			conn, err = net.DialUDP("udp", &net.UDPAddr{Port: 40001}, &net.UDPAddr{IP: net.ParseIP(lanNode), Port: 5300})
			return err
		})
		defer conn.Close()
		conn.Write([]byte("before")) // conntrack now holds 198.51.100.2:40001 -> node:5300
		c := n.attach(t, list, ports("udp//5300/53"))
		// The flush is the node's detached flusher's, which serves
		// later calls too (pkg/dnat flusher_linux.go).
		nodeHelper(t, n.host, "@netdrivers-udp-flush")
		nettest.Listen(t, c.ns, "udp", ":53", "ctr")
		buf := make([]byte, 100)
		nettest.Eventually(t, 3*time.Second, "udp through a pre-existing flow", func() error {
			conn.Write([]byte("after"))
			conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			nr, err := conn.Read(buf)
			if err != nil {
				return err
			}
			if !strings.HasPrefix(string(buf[:nr]), "ctr ") {
				return fmt.Errorf("got %q", buf[:nr])
			}
			return nil
		})
		n.detach(t, list, c)
	})
}

// TestBridgeLocalhostGuard: with route_localnet on the bridge (needed to
// publish on 127.0.0.1), a container still cannot reach the node's
// localhost-only services (CVE-2020-8558).
func TestBridgeLocalhostGuard(t *testing.T) {
	eachBackend(t, func(t *testing.T, n *node, backend string) {
		list := bridgeConf(t, "guard", backend, "10.93.0.0/24", nil)
		c := n.attach(t, list, ports("tcp/127.0.0.1/8080/80"))
		nettest.Listen(t, c.ns, "tcp", ":80", "ctr")
		wantFrom(t, n.host, "tcp", "127.0.0.1:8080", "ctr ")
		nettest.Listen(t, n.host, "tcp", "127.0.0.1:6000", "secret")
		// Make the container send 127.0.0.1 out of eth0 to the node.
		c.ns.MustRun(t, "ip", "route", "del", "local", "127.0.0.0/8", "table", "local")
		c.ns.Sysctl(t, "net/ipv4/conf/eth0/route_localnet", "1")
		c.ns.MustRun(t, "ip", "route", "add", "127.0.0.1/32", "via", "10.93.0.1", "dev", "eth0")
		if out, err := nettest.Dial(c.ns, "tcp", "127.0.0.1:6000", 500*time.Millisecond); err == nil {
			t.Errorf("container reached the node's localhost service: %q", out)
		}
		// The published 127.0.0.1 port is not reachable from the LAN.
		if _, err := nettest.Dial(n.outside, "tcp", lanNode+":8080", 500*time.Millisecond); err == nil {
			t.Error("a 127.0.0.1-published port is reachable from the LAN")
		}
		n.detach(t, list, c)
	})
}

// TestBridgeUDPDelFlush: after DEL no conntrack entry of a published UDP
// port still leads to the departed container (plugins#1277), although a
// client kept sending: the flush runs after the plugin answered.
func TestBridgeUDPDelFlush(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	n := newNode(t)
	list := bridgeConf(t, "udpdel", "nftables", "10.92.1.0/24", nil)
	c := n.attach(t, list, ports("udp//5400/53"))
	nettest.Listen(t, c.ns, "udp", ":53", "ctr")
	var conn net.Conn
	n.outside.MustDo(t, func() (err error) {
		conn, err = net.DialUDP("udp", &net.UDPAddr{Port: 40002}, &net.UDPAddr{IP: net.ParseIP(lanNode), Port: 5400})
		return err
	})
	defer conn.Close()
	buf := make([]byte, 100)
	nettest.Eventually(t, 3*time.Second, "udp through the published port", func() error {
		conn.Write([]byte("x"))
		conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, err := conn.Read(buf)
		return err
	})
	ctr := net.ParseIP(c.addr(false))
	n.detach(t, list, c)
	conn.Write([]byte("after")) // would refresh an entry still pointing at the container
	nettest.Eventually(t, 2*time.Second, "conntrack entries to the departed container", func() error {
		var flows []*netlink.ConntrackFlow
		n.host.MustDo(t, func() (err error) {
			flows, err = netlink.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
			return err
		})
		for _, f := range flows {
			if f.Reverse.SrcIP.Equal(ctr) {
				return fmt.Errorf("entry %s still leads to %s", f, ctr)
			}
		}
		return nil
	})
}
