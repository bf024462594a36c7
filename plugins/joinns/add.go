package main

import (
	"context"
	"fmt"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/state"
	"github.com/netdrivers/netdrivers/pkg/undo"
)

// add re-binds CNI_NETNS onto the target's namespace (last, after every
// check) and reports the target's interfaces, addresses and routes as they
// are live there.
func add(ctx context.Context, r *cniplugin.Request[*Conf]) (_ *current.Result, err error) {
	if len(r.Conf.Ports) > 0 {
		return nil, cnierr.Errorf(cnierr.UnsupportedField, "portMappings: a container joining another's network uses the target's port space; publish the ports on the target instead (Docker refuses -p with --network container:)")
	}
	s, err := state.Open(ctx)
	if err != nil {
		return nil, err
	}
	target, err := openTarget(s, r)
	if err != nil {
		return nil, err
	}
	defer target.Close()
	pin, err := netns.Prepare(r.NetNSPath, r.ContNS, r.NetNSErr, target.ID())
	if err != nil {
		return nil, err
	}
	defer pin.Close()
	prev, err := r.Base.Prev()
	if err != nil {
		return nil, err
	}
	res, err := target.Describe(netns.DescribeSpec{Sandbox: r.NetNSPath, IfName: r.Key.IfName, Prev: prev})
	if err != nil {
		return nil, fmt.Errorf("describe target %q: %w", r.Conf.Target, err)
	}
	var u undo.Stack
	defer u.OnError(&err)
	// Recorded too, so a third container can join this one by its ID.
	if err := netns.RecordPath(s, r.Key, r.NetNSPath, target.ID()); err != nil {
		return nil, err
	}
	u.Push(func() error { return netns.Forget(s, r.Key) })
	if pin != nil {
		if err := pin.Rebind(target, s, r.Key); err != nil {
			return nil, err
		}
	}
	return res, nil
}
