package test

import (
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// TestBridgeMulticastSnooping: a bridge the plugin creates has multicast
// snooping off unless "multicastSnooping" asks for it, a bridge that
// existed before keeps its own setting, and multicast between two
// containers of the bridge gets through.
func TestBridgeMulticastSnooping(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	n := newNode(t)
	// A bridge of the node's own, with the kernel's default (on).
	if err := n.host.NL(t).LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "ndown0"}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		subnet  string
		extra   map[string]any
		bridge  string
		snooped bool
	}{
		{"created", "10.20.30.0/24", nil, "", false},
		{"created, asked for", "10.20.31.0/24", map[string]any{"multicastSnooping": true}, "", true},
		{"existing", "10.20.32.0/24", map[string]any{"bridge": "ndown0"}, "ndown0", true},
	} {
		list := bridgeConf(t, "mc"+tc.subnet[6:8], "nftables", tc.subnet, tc.extra)
		a, b := n.attach(t, list, nil), n.attach(t, list, nil)
		t.Cleanup(func() { n.detach(t, list, a); n.detach(t, list, b) })
		br := a.res.Interfaces[0].Name
		if tc.bridge != "" && br != tc.bridge {
			t.Fatalf("%s: result names bridge %q, want %q", tc.name, br, tc.bridge)
		}
		l, ok := nettest.Link(t, n.host, br).(*netlink.Bridge)
		if !ok || l.MulticastSnooping == nil {
			t.Fatalf("%s: %s is not a bridge with a multicast snooping setting: %#v", tc.name, br, l)
		}
		if *l.MulticastSnooping != tc.snooped {
			t.Errorf("%s: %s multicast snooping %v, want %v", tc.name, br, *l.MulticastSnooping, tc.snooped)
		}
		wantMulticast(t, a.ns, b.ns)
	}
}

// wantMulticast sends UDP to a group from one namespace and expects it in
// the other, which joined the group on eth0.
func wantMulticast(t *testing.T, from, to *nettest.NS) {
	t.Helper()
	group := &net.UDPAddr{IP: net.IPv4(239, 1, 2, 3), Port: 5000}
	var c *net.UDPConn
	to.MustDo(t, func() error {
		ifc, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		c, err = net.ListenMulticastUDP("udp4", ifc, group)
		return err
	})
	defer c.Close()
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 64)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := c.ReadFromUDP(buf)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(buf[:n])
	}()
	var s *net.UDPConn
	from.MustDo(t, func() (err error) { s, err = net.DialUDP("udp4", nil, group); return err })
	defer s.Close()
	// Sent until it arrives: the receiver's join and the ports' forwarding
	// state settle moments after ADD.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := s.Write([]byte("hello group")); err != nil {
			t.Fatalf("send to %s from %s: %v", group, from.Name, err)
		}
		select {
		case msg := <-got:
			if msg != "hello group" {
				t.Errorf("multicast from %s to %s: %s", from.Name, to.Name, msg)
			}
			return
		case <-tick.C:
		}
	}
}
