package main

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/ipam"
	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/reaper"
	"github.com/netdrivers/netdrivers/pkg/state"
	"github.com/netdrivers/netdrivers/pkg/undo"
)

// add gives the container a macvlan on the master, its addresses and
// routes from IPAM, and (hostShim) a route from the host through the shim.
// All or nothing: every step pushes its undo.
func add(ctx context.Context, r *cniplugin.Request[*Conf]) (_ *current.Result, err error) {
	c := r.Conf
	prev, err := r.Base.Prev()
	if err != nil {
		return nil, err
	}
	parentNS := r.HostNS
	if c.LinkInContainer {
		parentNS = r.ContNS
	}
	parent, err := findParent(parentNS, c.Master)
	if err != nil {
		return nil, err
	}
	if pmtu := parent.Attrs().MTU; c.MTU > pmtu {
		return nil, cnierr.Errorf(cnierr.InvalidConfig, `"mtu": %d is larger than the MTU %d of master %q; want 0 (the master's MTU) or %d up to %d`,
			c.MTU, pmtu, parent.Attrs().Name, minMTU, pmtu)
	}
	st, err := state.Open(ctx)
	if err != nil {
		return nil, err
	}
	var u undo.Stack
	defer u.OnError(&err)

	// The intent record comes first, so that DEL and GC can undo a
	// half-done ADD from the key alone.
	if err := putRecord(st, r, parent, &u); err != nil {
		return nil, err
	}

	link, err := addMacvlan(parentNS, r.ContNS, linkSpec{Name: r.Key.IfName, Parent: parent,
		Mode: c.mode, MTU: c.MTU, MAC: c.mac, BCQueueLen: c.BCQueueLen})
	if err != nil {
		return nil, err
	}
	u.Push(func() error { return delMacvlan(r.HostNS, r.ContNS, r.Key.IfName) })

	res := &current.Result{Interfaces: []*current.Interface{{
		Name: r.Key.IfName, Mac: link.Attrs().HardwareAddr.String(), Sandbox: r.NetNSPath}}}
	if err := configure(ctx, r, link, res, &u); err != nil {
		if errors.Is(err, unix.EADDRINUSE) { // the kernel checks at link up
			return nil, cnierr.Errorf(cnierr.InvalidConfig, "mac %s is already used by another macvlan on %q: %w",
				link.Attrs().HardwareAddr, parent.Attrs().Name, err)
		}
		return nil, err
	}
	if c.HostShim {
		if err := attachShim(ctx, st, r, parent, res, &u); err != nil {
			return nil, err
		}
	}
	// Last: joinns may target this container by its ID from now on.
	if err := netns.Record(st, r.Key, r.ContNS); err != nil {
		return nil, err
	}
	return merge(r.Base.DNS, prev, res), nil
}

// putRecord writes the intent record. One already there (a second ADD
// without DEL, which fails later) is put back on rollback.
func putRecord(st *state.Store, r *cniplugin.Request[*Conf], parent netlink.Link, u *undo.Stack) error {
	old, _ := st.GetAttachment(r.Key)
	if err := st.PutAttachment(record(r, parent)); err != nil {
		return err
	}
	u.Push(func() error {
		if old != nil {
			return st.PutAttachment(old)
		}
		return st.DelAttachment(r.Key)
	})
	return nil
}

// record is the attachment's intent record.
func record(r *cniplugin.Request[*Conf], parent netlink.Link) *state.Attachment {
	a := &state.Attachment{Network: r.Key.Network, ContainerID: r.Key.ContainerID, IfName: r.Key.IfName,
		Plugin: "macvlan", NetNS: r.NetNSPath, Objects: map[string]string{
			"master": parent.Attrs().Name, "netnsID": r.ContNS.ID().String()}}
	if r.Conf.HostShim {
		a.Objects["shim"] = shimName(parent.Attrs().Name)
	}
	return a
}

// configure applies IPAM's addresses and routes to the link and brings it
// up; without IPAM (L2 only) it only brings it up, as the reference does.
func configure(ctx context.Context, r *cniplugin.Request[*Conf], link netlink.Link, res *current.Result, u *undo.Stack) error {
	c := r.Conf
	if c.ipam == nil {
		return setUp(r.ContNS, link)
	}
	ires, err := ipam.Allocate(ctx, c.ipam, r.Key)
	if err != nil {
		return err
	}
	u.Push(func() error { return ipam.Release(ctx, c.ipam, r.Key) })
	if len(ires.IPs) == 0 {
		return cnierr.Errorf(cnierr.InvalidConfig, "ipam %q returned no address", c.ipam.Type)
	}
	res.IPs, res.Routes = ires.IPs, ires.Routes
	for _, ipc := range res.IPs {
		ipc.Interface = current.Int(0)
	}
	if err := ipam.Configure(r.ContNS, r.Key.IfName, res, ipam.ConfigureOpts{DAD: c.EnableDAD}); err != nil {
		return err
	}
	// The segment's caches learn the new MAC at once, and later changes
	// too (arp_notify; ndisc_notify with IPv6). With many siblings on the
	// parent the node's reaper sends it (see reaper.Announce). Failures
	// cost only the announcement, as in the reference, which ignores them.
	if err := reaper.Announce(r.HostNS, r.ContNS, link, ipam.Addrs(res)); err != nil {
		log.Printf("announce %s: %v", link.Attrs().Name, err)
	}
	return nil
}

// attachShim routes the container's addresses from the host through the
// parent's shim, under the parent's lock.
func attachShim(ctx context.Context, st *state.Store, r *cniplugin.Request[*Conf], parent netlink.Link, res *current.Result, u *undo.Stack) error {
	s, unlock, err := openShim(ctx, st, r.HostNS, parent.Attrs().Name, r.Conf)
	if err != nil {
		return err
	}
	defer unlock()
	addrs := ipam.Prefixes(res)
	// The shim's undo steps run after the lock is gone: take it again.
	var su undo.Stack
	if err := s.attach(ctx, parent, r.Conf, r.Key, addrs, &su); err != nil {
		return fmt.Errorf("host shim: %w", joinUndo(err, &su))
	}
	// Undone later, after the lock was released: others may share the
	// shim by then, so take back only this reference.
	u.Push(func() error { return detachShim(ctx, st, r.HostNS, s.parent, r.Conf, r.Key) })
	return nil
}

func joinUndo(err error, u *undo.Stack) error {
	u.OnError(&err)
	return err
}

// openShim opens parent's shim with its lock held.
func openShim(ctx context.Context, st *state.Store, host *netns.Handle, parent string, c *Conf) (*shim, func(), error) {
	if _, err := host.Netlink(); err != nil {
		return nil, nil, err
	}
	unlock, err := lockShim(ctx, st, parent)
	if err != nil {
		return nil, nil, err
	}
	s := &shim{st: st, host: host, parent: parent}
	if c != nil {
		s.ipam = c.ipam
	}
	return s, unlock, nil
}

// merge passes a chain's prevResult on with this plugin's additions, or
// returns res alone. DNS is the config's, as in the reference (which
// drops what IPAM returned).
func merge(dns types.DNS, prev, res *current.Result) *current.Result {
	res.DNS = dns
	if prev == nil {
		return res
	}
	off := len(prev.Interfaces)
	for _, ipc := range res.IPs {
		ipc.Interface = current.Int(*ipc.Interface + off)
	}
	prev.Interfaces = append(prev.Interfaces, res.Interfaces...)
	prev.IPs = append(prev.IPs, res.IPs...)
	prev.Routes = append(prev.Routes, res.Routes...)
	if len(res.DNS.Nameservers) > 0 {
		prev.DNS = res.DNS
	}
	return prev
}
