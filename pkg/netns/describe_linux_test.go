package netns_test

import (
	"fmt"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// summary renders a result compactly: interfaces, then IPs as
// "addr@index(gw)", then routes.
func summary(r *current.Result) string {
	var b strings.Builder
	for _, i := range r.Interfaces {
		fmt.Fprintf(&b, "if %s sandbox=%s mac-ok=%v\n", i.Name, i.Sandbox, len(i.Mac) == 17)
	}
	for _, ip := range r.IPs {
		idx := "-"
		if ip.Interface != nil {
			idx = fmt.Sprint(*ip.Interface)
		}
		fmt.Fprintf(&b, "ip %s@%s gw=%v\n", ip.Address.String(), idx, ip.Gateway)
	}
	for _, rt := range r.Routes {
		fmt.Fprintf(&b, "route %s gw=%v\n", rt.Dst.String(), rt.GW)
	}
	return b.String()
}

func TestDescribe(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	n, up, side, empty := nettest.NewNS(t), nettest.NewNS(t), nettest.NewNS(t), nettest.NewNS(t)
	nettest.NewVeth(t, n, "up0", "192.0.2.10/24", up, "p0", "192.0.2.1/24")
	nettest.AddAddr(t, n, "up0", "2001:db8::10/64")
	nettest.NewVeth(t, n, "side0", "198.51.100.10/24", side, "p1", "")
	nettest.AddRoute(t, n, "default", "192.0.2.1")
	nettest.AddRoute(t, n, "default", "2001:db8::1")
	nettest.AddRoute(t, n, "203.0.113.0/24", "198.51.100.1")

	res, err := n.Handle().Describe(netns.DescribeSpec{Sandbox: "/run/netns/x", IfName: "eth0", Primary: true})
	if err != nil {
		t.Fatal(err)
	}
	want := `if up0 sandbox=/run/netns/x mac-ok=true
ip 192.0.2.10/24@0 gw=192.0.2.1
ip 2001:db8::10/64@0 gw=2001:db8::1
ip 192.0.2.10/24@- gw=192.0.2.1
ip 2001:db8::10/64@- gw=2001:db8::1
route 0.0.0.0/0 gw=192.0.2.1
route ::/0 gw=2001:db8::1
`
	if got := summary(res); got != want {
		t.Errorf("primary, CNI_IFNAME eth0:\n%s\nwant\n%s", got, want)
	}
	for _, v := range version.All.SupportedVersions() {
		if _, err := res.GetAsVersion(v); err != nil {
			t.Errorf("convert to %s: %v", v, err)
		}
	}

	res, err = n.Handle().Describe(netns.DescribeSpec{Sandbox: "/s", IfName: "side0"})
	if err != nil {
		t.Fatal(err)
	}
	want = `if up0 sandbox=/s mac-ok=true
if side0 sandbox=/s mac-ok=true
ip 192.0.2.10/24@0 gw=192.0.2.1
ip 2001:db8::10/64@0 gw=2001:db8::1
ip 198.51.100.10/24@1 gw=<nil>
route 0.0.0.0/0 gw=192.0.2.1
route 203.0.113.0/24 gw=198.51.100.1
route ::/0 gw=2001:db8::1
`
	if got := summary(res); got != want {
		t.Errorf("all interfaces, CNI_IFNAME side0:\n%s\nwant\n%s", got, want)
	}

	res, err = empty.Handle().Describe(netns.DescribeSpec{Sandbox: "/e", IfName: "lo"})
	if err != nil {
		t.Fatal(err)
	}
	want = "if lo sandbox=/e mac-ok=true\nip 127.0.0.1/8@0 gw=<nil>\nip ::1/128@0 gw=<nil>\n"
	if got := summary(res); got != want {
		t.Errorf("empty namespace:\n%s\nwant\n%s", got, want)
	}
	for _, v := range version.All.SupportedVersions() {
		if _, err := res.GetAsVersion(v); err != nil {
			t.Errorf("convert the lo-only result to %s: %v", v, err)
		}
	}
}
