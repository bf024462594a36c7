package ipam

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// configureNS gives a "container" namespace a veth eth0 towards a "host"
// namespace whose end carries the gateways.
func configureNS(t *testing.T) (host, cont *nettest.NS) {
	nettest.RequireRoot(t)
	host, cont = nettest.NewNS(t), nettest.NewNS(t)
	nettest.NewVeth(t, host, "gw0", "", cont, "eth0", "")
	nettest.AddAddr(t, host, "gw0", "10.50.0.1/24")
	nettest.AddAddr(t, host, "gw0", "2001:db8:50::1/64")
	nettest.SetUp(t, host, "gw0", "")
	nl := cont.NL(t)
	if err := nl.LinkSetDown(nettest.Link(t, cont, "eth0")); err != nil {
		t.Fatal(err)
	}
	return host, cont
}

func TestConfigure(t *testing.T) {
	t.Parallel()
	host, cont := configureNS(t)
	c := builtin(t, map[string]any{
		"ranges": []any{[]any{map[string]any{"subnet": "10.50.0.0/24"}}, []any{map[string]any{"subnet": "2001:db8:50::/64"}}},
		"routes": []any{map[string]any{"dst": "0.0.0.0/0"}, map[string]any{"dst": "::/0"}, map[string]any{"dst": "192.0.2.0/24", "gw": "10.50.0.254"}},
	})
	res, err := Allocate(context.Background(), c, key("cfg"))
	if err != nil {
		t.Fatal(err)
	}
	if err := Configure(cont.Handle(), "eth0", res, ConfigureOpts{}); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(nettest.Addrs(t, cont, "eth0")); got != "[10.50.0.2/24 2001:db8:50::2/64]" {
		t.Errorf("addresses = %s", got)
	}
	link := nettest.Link(t, cont, "eth0")
	if link.Attrs().Flags&net.FlagUp == 0 {
		t.Error("eth0 is down")
	}
	addrs, _ := cont.NL(t).AddrList(link, netlink.FAMILY_V6)
	for _, a := range addrs {
		if a.Scope == unix.RT_SCOPE_UNIVERSE && (a.Flags&unix.IFA_F_NODAD == 0 || a.Flags&unix.IFA_F_TENTATIVE != 0) {
			t.Errorf("%s flags %#x: want NODAD and not tentative", a.IPNet, a.Flags)
		}
	}
	routes := routeText(t, cont, link)
	for _, want := range []string{"0.0.0.0/0 via 10.50.0.1", "::/0 via 2001:db8:50::1", "192.0.2.0/24 via 10.50.0.254"} {
		if !strings.Contains(routes, want) {
			t.Errorf("routes %q lack %q", routes, want)
		}
	}
	if v := cont.ReadSysctl(t, "net/ipv6/conf/eth0/keep_addr_on_down"); v != "1" {
		t.Errorf("keep_addr_on_down = %s, want 1", v)
	}
	// Real traffic both ways, at once: NODAD means no waiting.
	if err := nettest.Ping(host, "2001:db8:50::2", 2*time.Second); err != nil {
		t.Error(err)
	}
	nettest.Reachable(t, cont, "10.50.0.1")
}

func routeText(t *testing.T, ns *nettest.NS, link netlink.Link) string {
	routes, err := ns.NL(t).RouteList(link, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, r := range routes {
		dst := "?"
		if r.Dst != nil {
			dst = r.Dst.String()
		}
		s = append(s, fmt.Sprintf("%s via %v", dst, r.Gw))
	}
	return strings.Join(s, "; ")
}

func TestConfigureDAD(t *testing.T) {
	t.Parallel()
	_, cont := configureNS(t)
	cont.Sysctl(t, "net/ipv6/neigh/eth0/retrans_time_ms", "100")        // one probe, 0.1 s,
	cont.Sysctl(t, "net/ipv6/conf/eth0/router_solicitation_delay", "0") // sent at once
	_, ipn, _ := net.ParseCIDR("2001:db8:50::9/64")
	ipn.IP = net.ParseIP("2001:db8:50::9")
	res := &current.Result{
		IPs:    []*current.IPConfig{{Address: *ipn, Gateway: net.ParseIP("2001:db8:50::1")}},
		Routes: []*types.Route{{Dst: net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}}},
	}
	if err := Configure(cont.Handle(), "eth0", res, ConfigureOpts{DAD: true}); err != nil {
		t.Fatal(err)
	}
	link := nettest.Link(t, cont, "eth0")
	addrs, _ := cont.NL(t).AddrList(link, netlink.FAMILY_V6)
	for _, a := range addrs {
		if a.Scope == unix.RT_SCOPE_UNIVERSE && (a.Flags&unix.IFA_F_NODAD != 0 || a.Flags&unix.IFA_F_TENTATIVE != 0) {
			t.Errorf("%s flags %#x: want DAD done (no NODAD, not tentative) when Configure returns", a.IPNet, a.Flags)
		}
	}
	if !strings.Contains(routeText(t, cont, link), "::/0 via 2001:db8:50::1") {
		t.Errorf("no default route: %s", routeText(t, cont, link))
	}
}

func TestConfigureErrors(t *testing.T) {
	t.Parallel()
	_, cont := configureNS(t)
	_, ipn, _ := net.ParseCIDR("10.50.0.9/24")
	ipn.IP = net.ParseIP("10.50.0.9").To4()
	res := &current.Result{IPs: []*current.IPConfig{{Address: *ipn}}}
	if err := Configure(cont.Handle(), "nosuch0", res, ConfigureOpts{}); err == nil {
		t.Error("Configure of a missing interface succeeded")
	}
	// An address meant for another interface of the result is left alone.
	idx := 0
	res.Interfaces = []*current.Interface{{Name: "other0"}}
	res.IPs[0].Interface = &idx
	if err := Configure(cont.Handle(), "eth0", res, ConfigureOpts{}); err != nil {
		t.Fatal(err)
	}
	if got := nettest.Addrs(t, cont, "eth0"); len(got) != 0 {
		t.Errorf("eth0 got %v, an address of other0", got)
	}
}
