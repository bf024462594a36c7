package main

import (
	"context"
	"fmt"

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
	pin, err := judge(r)
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
		if err := pin.Rebind(r.HostNS); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// judge decides what CNI_NETNS is: the host namespace already (nil Pin:
// only report), or a pinned, unentered file to re-bind. Anything else is
// error 103 saying why, before anything changed.
func judge(r *cniplugin.Request[*Conf]) (*netns.Pin, error) {
	if r.ContNS != nil && r.ContNS.ID() == r.HostNS.ID() {
		return nil, nil
	}
	if r.ContNS == nil {
		return nil, fmt.Errorf("%w: CNI_NETNS %q: %w", netns.ErrRebind, r.NetNSPath, r.NetNSErr)
	}
	return netns.OpenPin(r.NetNSPath)
}
