package main

import (
	"context"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/hostport"
	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/state"
	"github.com/netdrivers/netdrivers/pkg/undo"
)

// add validates everything, reserves the ports, then re-binds CNI_NETNS
// onto the host namespace (unless it is that already) as the last step,
// and reports the host's main interface.
func add(ctx context.Context, r *cniplugin.Request[*Conf]) (_ *current.Result, err error) {
	if !r.Conf.AllowHostNetwork {
		return nil, errNotAllowed
	}
	// CNI_NETNS already the host's: only report. A pinned, unentered
	// file: re-bind it, last. Anything else: 103, before any change.
	pin, err := netns.Prepare(r.NetNSPath, r.ContNS, r.NetNSErr, r.HostNS.ID())
	if err != nil {
		return nil, err
	}
	defer pin.Close()
	prev, err := r.Base.Prev()
	if err != nil {
		return nil, err
	}
	res, err := r.HostNS.Describe(netns.DescribeSpec{Sandbox: r.NetNSPath, IfName: r.Key.IfName, Primary: true, Prev: prev})
	if err != nil {
		return nil, err
	}
	s, err := state.Open(ctx)
	if err != nil {
		return nil, err
	}
	var u undo.Stack
	defer u.OnError(&err)
	if err := hostport.Reserve(ctx, s, r.Key, r.Conf.Ports, true); err != nil {
		return nil, err
	}
	u.Push(func() error { return hostport.Release(ctx, s, r.Key) })
	if err := netns.RecordPath(s, r.Key, r.NetNSPath, r.HostNS.ID()); err != nil {
		return nil, err
	}
	u.Push(func() error { return netns.Forget(s, r.Key) })
	if pin != nil {
		if err := pin.Rebind(r.HostNS, s, r.Key); err != nil {
			return nil, err
		}
	}
	return res, nil
}
