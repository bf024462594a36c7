package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/ipam"
	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/state"
)

// ErrCheck marks a difference between the live state and prevResult.
var ErrCheck = cnierr.ErrDiffers

// check verifies, changing nothing, that the container's link still is
// the macvlan ADD made (type, mode, parent, MAC), with prevResult's
// addresses and routes, that IPAM still holds them, and that the host
// shim still routes to them. The MTU is not compared, as in the
// reference: prevResult has none, and a later plugin (tuning) may set it.
func check(ctx context.Context, r *cniplugin.Request[*Conf]) error {
	c := r.Conf
	prev, idx, iface, err := r.ContainerIface()
	if err != nil {
		return err
	}
	parentNS := r.HostNS
	if c.LinkInContainer {
		parentNS = r.ContNS
	}
	parent, err := findParent(parentNS, c.Master)
	if err != nil {
		return err
	}
	link, err := r.ContNS.Link(r.Key.IfName)
	if err != nil {
		return fmt.Errorf("interface %q is missing from %s: %w", r.Key.IfName, r.NetNSPath, ErrCheck)
	}
	errs := []error{checkLink(link, parent, c, iface)}
	mine := ipsOf(prev, idx)
	errs = append(errs, checkAddrs(r.ContNS, link, mine), checkRoutes(r.ContNS, link, prev.Routes))
	if c.ipam != nil {
		errs = append(errs, ipam.Check(ctx, c.ipam, r.Key, prev))
	}
	if c.HostShim {
		errs = append(errs, checkShim(ctx, r, parent, mine))
	}
	return errors.Join(errs...)
}

// ipsOf returns the addresses prevResult gives interface idx.
func ipsOf(res *current.Result, idx int) []*current.IPConfig {
	var out []*current.IPConfig
	for _, ipc := range res.IPs {
		if ipc.Interface != nil && *ipc.Interface == idx {
			out = append(out, ipc)
		}
	}
	return out
}

func checkLink(l netlink.Link, parent netlink.Link, c *Conf, iface *current.Interface) error {
	name := l.Attrs().Name
	mv, ok := l.(*netlink.Macvlan)
	if !ok {
		return fmt.Errorf("%q is a %s, not a macvlan: %w", name, l.Type(), ErrCheck)
	}
	var errs []error
	if mv.Mode != c.mode {
		errs = append(errs, fmt.Errorf("%q is in mode %s, want %s: %w", name, modeName(mv.Mode), modeName(c.mode), ErrCheck))
	}
	if mv.ParentIndex != parent.Attrs().Index {
		errs = append(errs, fmt.Errorf("%q hangs off link index %d, not master %q (index %d): %w",
			name, mv.ParentIndex, parent.Attrs().Name, parent.Attrs().Index, ErrCheck))
	}
	if got := mv.HardwareAddr.String(); iface.Mac != "" && got != iface.Mac {
		errs = append(errs, fmt.Errorf("%q has MAC %s, prevResult says %s: %w", name, got, iface.Mac, ErrCheck))
	}
	if mv.Flags&net.FlagUp == 0 {
		errs = append(errs, fmt.Errorf("%q is down: %w", name, ErrCheck))
	}
	return errors.Join(errs...)
}

func checkAddrs(ns *netns.Handle, l netlink.Link, want []*current.IPConfig) error {
	if len(want) == 0 {
		return nil
	}
	nl, err := ns.Netlink()
	if err != nil {
		return err
	}
	have, err := netns.AddrList(nl, l, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses of %q: %w", l.Attrs().Name, err)
	}
	var errs []error
	for _, w := range want {
		found := false
		for _, h := range have {
			if h.IPNet.IP.Equal(w.Address.IP) && h.IPNet.Mask.String() == w.Address.Mask.String() {
				found = true
				break
			}
		}
		if !found {
			errs = append(errs, fmt.Errorf("%q lacks address %s: %w", l.Attrs().Name, w.Address.String(), ErrCheck))
		}
	}
	return errors.Join(errs...)
}

func checkRoutes(ns *netns.Handle, l netlink.Link, want []*types.Route) error {
	if len(want) == 0 {
		return nil
	}
	nl, err := ns.Netlink()
	if err != nil {
		return err
	}
	// Every table, any link: as in the reference, a chain's routes may
	// use other interfaces and IPAM's may name a table.
	have, err := nl.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	var errs []error
	for _, w := range want {
		if !hasRoute(have, w) {
			errs = append(errs, fmt.Errorf("route to %s via %v missing (%q): %w", w.Dst.String(), w.GW, l.Attrs().Name, ErrCheck))
		}
	}
	return errors.Join(errs...)
}

func hasRoute(have []netlink.Route, w *types.Route) bool {
	wd := w.Dst.String()
	for _, h := range have {
		d := "0.0.0.0/0"
		if h.Family == netlink.FAMILY_V6 {
			d = "::/0"
		}
		if h.Dst != nil {
			d = h.Dst.String()
		}
		if d == wd && (w.GW == nil || w.GW.Equal(h.Gw)) && (w.Table == nil || *w.Table == h.Table) {
			return true
		}
	}
	return false
}

// checkShim verifies that the host still routes the container's
// addresses through the parent's shim.
func checkShim(ctx context.Context, r *cniplugin.Request[*Conf], parent netlink.Link, ips []*current.IPConfig) error {
	st, err := state.Open(ctx)
	if err != nil {
		return err
	}
	s := &shim{st: st, host: r.HostNS, parent: parent.Attrs().Name}
	var ref shimRef
	if ok, err := st.Get(s.refFile(r.Key), &ref); err != nil || !ok {
		return errors.Join(err, fmt.Errorf("no host shim reference for this attachment: %w", ErrCheck))
	}
	name := shimName(s.parent)
	link, err := r.HostNS.Link(name)
	if err != nil {
		return fmt.Errorf("host shim %q is missing: %w", name, ErrCheck)
	}
	nl, _ := r.HostNS.Netlink()
	var errs []error
	for _, a := range ref.Addrs {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			continue
		}
		got, err := nl.RouteGet(ip.AsSlice())
		if err != nil || len(got) == 0 || got[0].LinkIndex != link.Attrs().Index {
			errs = append(errs, fmt.Errorf("host does not route %s through shim %q: %w", ip, name, ErrCheck))
		}
	}
	if len(ref.Addrs) == 0 && len(ips) > 0 {
		errs = append(errs, fmt.Errorf("host shim %q routes none of the container's addresses: %w", name, ErrCheck))
	}
	return errors.Join(errs...)
}
