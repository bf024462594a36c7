package netns

import (
	"fmt"
	"net"
	"sort"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DescribeSpec says how Describe reports a namespace.
type DescribeSpec struct {
	// Sandbox is the path the runtime knows the namespace by (CNI_NETNS);
	// every reported interface carries it.
	Sandbox string
	// IfName is CNI_IFNAME. containerd's CRI (go-cni) files an IP under
	// the interface its index names, or under eth0 when it has none, and
	// takes the sandbox IPs only from eth0 (its first CNI_IFNAME); Podman
	// ignores IPs without an index. When no reported interface is called
	// IfName, the main interface's addresses are listed a second time
	// without an index, so both find them.
	IfName string
	// Primary limits the report to the main interface: the one the
	// default route leaves by (IPv4 first), else the first link that is up
	// and has a global address. hostns reports the host this way.
	Primary bool
	// Prev is a chain's prevResult, when there is one: the report is
	// appended to it (IP indexes shifted), so a chain's result grows.
	Prev *current.Result
}

// Describe reports what is live in h as a CNI result: its interfaces
// (every link but lo and idle fallback tunnels; each with a valid MAC, the
// zero MAC for links without one), their global addresses with the
// default gateway of their family, and the routes configured beyond the
// kernel's own subnet routes. A namespace without any global address is
// reported as lo with its loopback addresses, so every CNI version (0.2.0
// needs an address) can carry the result. Read-only.
// Equivalent to: ip -n NS addr; ip -n NS route
func (h *Handle) Describe(s DescribeSpec) (*current.Result, error) {
	nl, err := h.Netlink()
	if err != nil {
		return nil, err
	}
	links, err := nl.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links in %s: %w", h.Path, err)
	}
	sort.Slice(links, func(i, j int) bool { return links[i].Attrs().Index < links[j].Attrs().Index })
	routes, err := nl.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes in %s: %w", h.Path, err)
	}
	d := describer{h: h, nl: addrLister{nl}, spec: s, gws: defaultGateways(routes)}
	primary := d.primary(links, routes)
	for _, l := range links {
		if ignorable(l) || (s.Primary && l.Attrs().Index != primary) {
			continue
		}
		if err := d.addLink(l); err != nil {
			return nil, err
		}
	}
	if len(d.res.IPs) == 0 {
		for _, l := range links {
			if l.Attrs().Name == "lo" {
				primary = l.Attrs().Index
				if err := d.addLink(l); err != nil {
					return nil, err
				}
			}
		}
	}
	d.res.Routes = reportRoutes(routes, s.Primary, primary)
	d.repeatForCRI(primary)
	return appendTo(s.Prev, &d.res), nil
}

// appendTo returns prev with res's interfaces, IPs and routes after its
// own; res itself when there is no prev.
func appendTo(prev, res *current.Result) *current.Result {
	if prev == nil {
		return res
	}
	base := len(prev.Interfaces)
	prev.Interfaces = append(prev.Interfaces, res.Interfaces...)
	for _, ip := range res.IPs {
		if ip.Interface != nil {
			ip.Interface = current.Int(*ip.Interface + base)
		}
		prev.IPs = append(prev.IPs, ip)
	}
	prev.Routes = append(prev.Routes, res.Routes...)
	return prev
}

type describer struct {
	h  *Handle
	nl interface {
		AddrList(netlink.Link, int) ([]netlink.Addr, error)
	}
	spec DescribeSpec
	gws  map[int]map[int]net.IP // link index -> family -> default gateway
	res  current.Result
	idx  map[int]int // link index -> result interface index
}

func (d *describer) addLink(l netlink.Link) error {
	a := l.Attrs()
	mac := "00:00:00:00:00:00"
	if len(a.HardwareAddr) == 6 {
		mac = a.HardwareAddr.String()
	}
	i := len(d.res.Interfaces)
	d.res.Interfaces = append(d.res.Interfaces, &current.Interface{Name: a.Name, Mac: mac, Sandbox: d.spec.Sandbox})
	if d.idx == nil {
		d.idx = map[int]int{}
	}
	d.idx[a.Index] = i
	addrs, err := d.nl.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses of %s in %s: %w", a.Name, d.h.Path, err)
	}
	for _, ad := range addrs {
		if ad.Scope != unix.RT_SCOPE_UNIVERSE && a.Name != "lo" {
			continue // link-local
		}
		family := netlink.FAMILY_V4
		if ad.IP.To4() == nil {
			family = netlink.FAMILY_V6
		}
		ip := &current.IPConfig{Interface: current.Int(i), Address: *ad.IPNet}
		ip.Gateway = d.gws[a.Index][family] // nil without a default route there
		d.res.IPs = append(d.res.IPs, ip)
	}
	return nil
}

// repeatForCRI lists the main interface's addresses again without an
// index when no reported interface is named IfName (see DescribeSpec).
func (d *describer) repeatForCRI(primary int) {
	if d.spec.IfName == "" {
		return
	}
	for _, iface := range d.res.Interfaces {
		if iface.Name == d.spec.IfName {
			return
		}
	}
	main, ok := d.idx[primary]
	if !ok {
		return
	}
	for _, ip := range d.res.IPs {
		if ip.Interface != nil && *ip.Interface == main {
			d.res.IPs = append(d.res.IPs, &current.IPConfig{Address: ip.Address, Gateway: ip.Gateway})
		}
	}
}

// primary picks the main link's index: the IPv4, else IPv6, default
// route's, else the first up link with a global address.
func (d *describer) primary(links []netlink.Link, routes []netlink.Route) int {
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		for _, r := range routes {
			if r.Family == family && isDefault(r) && r.LinkIndex > 0 {
				return r.LinkIndex
			}
		}
	}
	for _, l := range links {
		if ignorable(l) || l.Attrs().Flags&net.FlagUp == 0 {
			continue
		}
		addrs, err := d.nl.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if a.Scope == unix.RT_SCOPE_UNIVERSE {
				return l.Attrs().Index
			}
		}
	}
	return 0
}

func isDefault(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0
}

func gateway(r netlink.Route) net.IP {
	if r.Gw != nil || len(r.MultiPath) == 0 {
		return r.Gw
	}
	return r.MultiPath[0].Gw
}

func defaultGateways(routes []netlink.Route) map[int]map[int]net.IP {
	out := map[int]map[int]net.IP{}
	for _, r := range routes {
		gw := gateway(r)
		if !isDefault(r) || gw == nil || r.LinkIndex == 0 {
			continue
		}
		if out[r.LinkIndex] == nil {
			out[r.LinkIndex] = map[int]net.IP{}
		}
		if out[r.LinkIndex][r.Family] == nil {
			out[r.LinkIndex][r.Family] = gw
		}
	}
	return out
}

// reportRoutes turns the main table into result routes, leaving out what
// the kernel derives from addresses (proto kernel) and IPv6 link-local
// and multicast routes. With primaryOnly only the main link's default
// routes are kept.
func reportRoutes(routes []netlink.Route, primaryOnly bool, primary int) []*types.Route {
	var out []*types.Route
	for _, r := range routes {
		if r.Protocol == unix.RTPROT_KERNEL || r.Type != unix.RTN_UNICAST {
			continue
		}
		if primaryOnly && (!isDefault(r) || r.LinkIndex != primary) {
			continue
		}
		dst := r.Dst
		if dst == nil {
			bits := 32
			if r.Family == netlink.FAMILY_V6 {
				bits = 128
			}
			dst = &net.IPNet{IP: make(net.IP, bits/8), Mask: net.CIDRMask(0, bits)}
		}
		if dst.IP.IsLinkLocalUnicast() || dst.IP.IsMulticast() {
			continue
		}
		out = append(out, &types.Route{Dst: *dst, GW: gateway(r)})
	}
	return out
}
