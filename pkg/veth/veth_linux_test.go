package veth

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/nettest"
)

func TestAddDelCheck(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	host, cont := nettest.NewNS(t), nettest.NewNS(t)
	key := netconf.Key{Network: "n", ContainerID: nettest.ID(t), IfName: "eth0"}
	name := HostName(key)
	if len(name) > 15 || name[:4] != "veth" {
		t.Fatalf("HostName = %q", name)
	}
	mac, _ := net.ParseMAC("02:11:22:33:44:55")
	before := nettest.LinkNames(t, host)
	p, err := Add(host.Handle(), cont.Handle(), Spec{HostName: name, ContName: "eth0", MTU: 1400, ContMAC: mac})
	if err != nil {
		t.Fatal(err)
	}
	if p.Cont.Attrs().HardwareAddr.String() != mac.String() || p.Cont.Attrs().MTU != 1400 || p.Host.Attrs().MTU != 1400 {
		t.Errorf("pair = %+v / %+v", p.Host.Attrs(), p.Cont.Attrs())
	}
	if err := Check(host.Handle(), cont.Handle(), name, "eth0", mac); err != nil {
		t.Errorf("Check: %v", err)
	}
	other, _ := net.ParseMAC("02:00:00:00:00:09")
	if err := Check(host.Handle(), cont.Handle(), name, "eth0", other); err == nil {
		t.Error("Check with the wrong MAC passed")
	}
	// A second pair with the same container name fails with code 7 and
	// leaves nothing.
	_, err = Add(host.Handle(), cont.Handle(), Spec{HostName: "vethother0", ContName: "eth0"})
	if !errors.Is(err, ErrExists) || cnierr.CodeOf(err) != cnierr.InvalidConfig {
		t.Errorf("duplicate ifname: %v", err)
	}
	if nettest.HasLink(t, host, "vethother0") {
		t.Error("failed Add left vethother0 behind")
	}
	for range 2 {
		if err := Del(host.Handle(), name); err != nil {
			t.Fatal(err)
		}
	}
	if got := nettest.LinkNames(t, host); !slices.Equal(got, before) {
		t.Errorf("links after Del = %v, want %v", got, before)
	}
	if nettest.HasLink(t, cont, "eth0") {
		t.Error("container end survived Del")
	}
}

func TestDelRefusesNonVeth(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	host := nettest.NewNS(t)
	if err := Del(host.Handle(), "lo"); err == nil {
		t.Error("Del(lo) succeeded")
	}
	if !nettest.HasLink(t, host, "lo") {
		t.Error("lo deleted")
	}
}

// TestAddEnslavesAndDescribes runs Add as on a kernel that echoes the
// create (6.3 and later) and as on one that does not: either way the host
// end is the bridge's port, up, both ends have one queue each way, and the
// pair returned is what the kernel holds (indices, names, MACs), also for
// a MAC Add chose itself.
func TestAddEnslavesAndDescribes(t *testing.T) {
	nettest.RequireRoot(t)
	for _, echo := range []bool{true, false} {
		t.Run(map[bool]string{true: "echo", false: "no-echo"}[echo], func(t *testing.T) {
			defer func(v bool) { echoCreate = v }(echoCreate)
			echoCreate = echo
			host, cont := nettest.NewNS(t), nettest.NewNS(t)
			if err := host.NL(t).LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}); err != nil {
				t.Fatal(err)
			}
			br := nettest.Link(t, host, "br0")
			for i, noV6 := range []bool{true, false} {
				name := fmt.Sprintf("vethtest%d", i)
				ifname := fmt.Sprintf("eth%d", i)
				p, err := Add(host.Handle(), cont.Handle(), Spec{HostName: name, ContName: ifname, MasterIdx: br.Attrs().Index, HostNoIPv6: noV6, NoLinkLocal: true})
				if err != nil {
					t.Fatal(err)
				}
				hl, cl := nettest.Link(t, host, name), nettest.Link(t, cont, ifname)
				if hl.Attrs().MasterIndex != br.Attrs().Index {
					t.Errorf("%s: master %d, want the bridge %d", name, hl.Attrs().MasterIndex, br.Attrs().Index)
				}
				for _, l := range []netlink.Link{hl, cl} {
					if l.Attrs().Flags&net.FlagUp == 0 {
						t.Errorf("%s is down", l.Attrs().Name)
					}
				}
				for _, c := range []struct{ got, want netlink.Link }{{p.Host, hl}, {p.Cont, cl}} {
					g, w := c.got.Attrs(), c.want.Attrs()
					if g.Name != w.Name || g.Index != w.Index || g.HardwareAddr.String() != w.HardwareAddr.String() || g.MTU != w.MTU {
						t.Errorf("Add returned %s #%d %s mtu %d, the kernel holds %s #%d %s mtu %d",
							g.Name, g.Index, g.HardwareAddr, g.MTU, w.Name, w.Index, w.HardwareAddr, w.MTU)
					}
				}
				// One queue each way, as the kernel would leave them, but
				// without the shrink from one per CPU (oneQueue).
				for _, l := range []netlink.Link{hl, cl} {
					if a := l.Attrs(); a.NumTxQueues != 1 || a.NumRxQueues != 1 {
						t.Errorf("%s: %d transmit and %d receive queues, want 1 and 1", a.Name, a.NumTxQueues, a.NumRxQueues)
					}
				}
				if a := cont.AddrAssignType(t, ifname); a != "3" {
					t.Errorf("%s: addr_assign_type %s, want 3 (set by Add)", ifname, a)
				}
				if noV6 && len(nettest.Addrs(t, host, name)) != 0 {
					t.Errorf("%s has addresses: %v", name, nettest.Addrs(t, host, name))
				}
			}
		})
	}
}
