package main

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/state"
)

// check verifies that CNI_NETNS and the target are the same namespace
// (device+inode) and that the addresses ADD reported are still on the
// target's interfaces. It changes nothing.
func check(ctx context.Context, r *cniplugin.Request[*Conf]) error {
	s, err := state.Open(ctx)
	if err != nil {
		return err
	}
	target, err := openTarget(s, r)
	if errors.Is(err, netns.ErrTargetUnknown) || errors.Is(err, netns.ErrTargetGone) || errors.Is(err, netns.ErrNotExist) {
		return fmt.Errorf("the target's attachment is gone: %w", err)
	}
	if err != nil {
		return err
	}
	defer target.Close()
	if r.ContNS == nil {
		return cnierr.Errorf(cnierr.InvalidNetNS, "CNI_NETNS %q: %w", r.NetNSPath, r.NetNSErr)
	}
	if r.ContNS.ID() != target.ID() {
		return fmt.Errorf("CNI_NETNS %q is namespace %s, but target %q is %s: the container has not joined it",
			r.NetNSPath, r.ContNS.ID(), r.Conf.Target, target.ID())
	}
	prev, err := r.Base.Prev()
	if err != nil || prev == nil {
		return err
	}
	for _, ip := range prev.IPs {
		if ip.Interface == nil || *ip.Interface < 0 || *ip.Interface >= len(prev.Interfaces) {
			continue
		}
		iface := prev.Interfaces[*ip.Interface]
		if iface.Sandbox != r.NetNSPath {
			continue
		}
		if err := hasAddr(target, iface.Name, ip.Address); err != nil {
			return fmt.Errorf("target %q: %w", r.Conf.Target, err)
		}
	}
	return nil
}

func hasAddr(h *netns.Handle, name string, want net.IPNet) error {
	l, err := h.Link(name)
	if err != nil {
		return fmt.Errorf("interface %s reported by ADD is gone: %w", name, err)
	}
	nl, err := h.Netlink()
	if err != nil {
		return err
	}
	addrs, err := netns.AddrList(nl, l, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", name, err)
	}
	for _, a := range addrs {
		if a.IPNet.String() == want.String() {
			return nil
		}
	}
	return fmt.Errorf("address %s reported by ADD is no longer on %s", want.String(), name)
}
