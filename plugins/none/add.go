package main

import (
	"context"
	"fmt"
	"net"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/netns"
)

// mode is the name the binary runs under: "none" or "loopback".
type mode string

func add(_ context.Context, r *cniplugin.Request[mode]) (*current.Result, error) {
	if r.ContNS == nil { // loopback mode judges CNI_NETNS itself
		return nil, fmt.Errorf("CNI_NETNS: %w", r.NetNSErr)
	}
	nl, err := r.ContNS.Netlink()
	if err != nil {
		return nil, err
	}
	lo, err := nl.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("find lo: %w", err)
	}
	if r.ContNS.ID() != r.HostNS.ID() { // the node's lo is not ours to change
		if err := nl.LinkSetUp(lo); err != nil {
			return nil, fmt.Errorf("set lo up: %w", err)
		}
	}
	prev, err := r.Base.Prev()
	if err != nil {
		return nil, err
	}
	res := &current.Result{
		Interfaces: []*current.Interface{{Name: "lo", Mac: "00:00:00:00:00:00", Sandbox: r.NetNSPath}},
	}
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		addrs, err := netns.AddrList(nl, lo, family)
		if err != nil {
			return nil, fmt.Errorf("list addresses of lo: %w", err)
		}
		for _, a := range addrs {
			if !a.IP.IsLoopback() {
				return nil, fmt.Errorf("lo holds non-loopback address %s", a.IPNet)
			}
		}
		if len(addrs) > 0 {
			res.IPs = append(res.IPs, &current.IPConfig{Interface: current.Int(0), Address: *addrs[0].IPNet})
		}
	}
	if prev != nil {
		return prev, nil // as the reference loopback: pass a chain's result on
	}
	return res, nil
}

func loopbackUp(l netlink.Link) bool { return l.Attrs().Flags&net.FlagUp != 0 }
