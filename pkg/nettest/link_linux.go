package nettest

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

// Veth is a veth pair between two namespaces.
type Veth struct {
	Name, PeerName string
	NS, PeerNS     *NS
}

// NewVeth creates a veth pair, name in a and peer in b, both up, and
// assigns the given CIDR addresses ("" for none). Removed with a.
func NewVeth(t testing.TB, a *NS, name, addrA string, b *NS, peer, addrB string) *Veth {
	t.Helper()
	la := netlink.NewLinkAttrs()
	la.Name = name
	v := &netlink.Veth{LinkAttrs: la, PeerName: peer, PeerNamespace: netlink.NsFd(b.h.Fd())}
	if err := a.NL(t).LinkAdd(v); err != nil {
		t.Fatalf("add veth %s/%s: %v", name, peer, err)
	}
	t.Cleanup(func() {
		if l, err := a.NL(t).LinkByName(name); err == nil {
			a.NL(t).LinkDel(l)
		}
	})
	SetUp(t, a, name, addrA)
	SetUp(t, b, peer, addrB)
	return &Veth{Name: name, PeerName: peer, NS: a, PeerNS: b}
}

// NewNeighbours is two fresh namespaces whose eth0s are joined by a veth:
// a has 198.51.100.5/24 and 2001:db8:5::5/64, b the same network's .6.
func NewNeighbours(t testing.TB) (a, b *NS) {
	t.Helper()
	a, b = NewNS(t), NewNS(t)
	NewVeth(t, a, "eth0", "198.51.100.5/24", b, "eth0", "198.51.100.6/24")
	AddAddr(t, a, "eth0", "2001:db8:5::5/64")
	AddAddr(t, b, "eth0", "2001:db8:5::6/64")
	return a, b
}

// SetUp brings a link up and adds an address (CIDR, optional, no DAD).
func SetUp(t testing.TB, n *NS, name, cidr string) {
	t.Helper()
	nl := n.NL(t)
	l, err := nl.LinkByName(name)
	if err != nil {
		t.Fatalf("find %s in %s: %v", name, n.Name, err)
	}
	if cidr != "" {
		AddAddr(t, n, name, cidr)
	}
	if err := nl.LinkSetUp(l); err != nil {
		t.Fatalf("set %s up: %v", name, err)
	}
}

// AddAddr adds a CIDR address to a link without DAD.
func AddAddr(t testing.TB, n *NS, name, cidr string) {
	t.Helper()
	nl := n.NL(t)
	l, err := nl.LinkByName(name)
	if err != nil {
		t.Fatalf("find %s: %v", name, err)
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		t.Fatalf("parse %q: %v", cidr, err)
	}
	a.Flags = 0x02 // IFA_F_NODAD
	if err := nl.AddrAdd(l, a); err != nil {
		t.Fatalf("add %s to %s: %v", cidr, name, err)
	}
}

// AddRoute adds a route (dst CIDR, "default" allowed) via gw in n.
func AddRoute(t testing.TB, n *NS, dst, gw string) {
	t.Helper()
	r := &netlink.Route{Gw: net.ParseIP(gw)}
	if dst != "default" {
		_, d, err := net.ParseCIDR(dst)
		if err != nil {
			t.Fatal(err)
		}
		r.Dst = d
	} else if r.Gw.To4() == nil {
		r.Dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	if err := n.NL(t).RouteAdd(r); err != nil {
		t.Fatalf("add route %s via %s in %s: %v", dst, gw, n.Name, err)
	}
}

// LinkNames lists the links of a namespace, sorted.
func LinkNames(t testing.TB, n *NS) []string {
	t.Helper()
	links, err := n.NL(t).LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	sort.Strings(names)
	return names
}

// Link returns a link by name or fails t.
func Link(t testing.TB, n *NS, name string) netlink.Link {
	t.Helper()
	l, err := n.NL(t).LinkByName(name)
	if err != nil {
		t.Fatalf("link %s in %s: %v", name, n.Name, err)
	}
	return l
}

// HasLink reports whether a link exists.
func HasLink(t testing.TB, n *NS, name string) bool {
	t.Helper()
	_, err := n.NL(t).LinkByName(name)
	return err == nil
}

// Addrs returns the global-scope addresses of a link as prefixes.
func Addrs(t testing.TB, n *NS, name string) []netip.Prefix {
	t.Helper()
	l := Link(t, n, name)
	addrs, err := n.NL(t).AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Prefix
	for _, a := range addrs {
		if a.Scope != int(netlink.SCOPE_UNIVERSE) {
			continue
		}
		ip, _ := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		out = append(out, netip.PrefixFrom(ip.Unmap(), ones))
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return strings.Compare(a.String(), b.String()) })
	return out
}

// kernelLinkLocal is an IPv6 link-local address or route, which the kernel
// adds by itself some time after a link comes up: snapshots leave them out
// so that "nothing changed" comparisons do not race with it.
func kernelLinkLocal(ip net.IP) bool { return ip.To4() == nil && ip.IsLinkLocalUnicast() }

// Snapshot describes a namespace's links, addresses, routes and neighbour
// -independent state as text, for "nothing changed" comparisons.
func Snapshot(t testing.TB, n *NS) string {
	t.Helper()
	nl := n.NL(t)
	var b strings.Builder
	links, err := nl.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(links, func(i, j int) bool { return links[i].Attrs().Name < links[j].Attrs().Name })
	for _, l := range links {
		a := l.Attrs()
		fmt.Fprintf(&b, "link %s %s mtu=%d up=%v master=%d\n", a.Name, l.Type(), a.MTU, a.Flags&net.FlagUp != 0, a.MasterIndex)
		addrs, _ := nl.AddrList(l, netlink.FAMILY_ALL)
		var as []string
		for _, ad := range addrs {
			if kernelLinkLocal(ad.IP) {
				continue
			}
			as = append(as, ad.IPNet.String())
		}
		sort.Strings(as)
		for _, s := range as {
			fmt.Fprintf(&b, "  addr %s\n", s)
		}
	}
	routes, err := nl.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: 0}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var rs []string
	for _, r := range routes {
		if r.Dst != nil && kernelLinkLocal(r.Dst.IP) {
			continue
		}
		rs = append(rs, fmt.Sprintf("route table=%d %s", r.Table, r.String()))
	}
	sort.Strings(rs)
	b.WriteString(strings.Join(rs, "\n"))
	return b.String()
}
