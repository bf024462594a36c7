package main

import (
	"context"
	"errors"

	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/dnat"
	"github.com/netdrivers/netdrivers/pkg/hostport"
	"github.com/netdrivers/netdrivers/pkg/ipam"
	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/reaper"
	"github.com/netdrivers/netdrivers/pkg/state"
	"github.com/netdrivers/netdrivers/pkg/veth"
)

// del removes everything ADD made, found from the key alone: it works with
// an empty CNI_NETNS and no prevResult (containerd's second DEL), after a
// half-done ADD, and a second time. Every step runs; errors are joined.
func del(ctx context.Context, r *cniplugin.Request[*Conf]) error {
	store, err := state.Open(ctx)
	if err != nil {
		return err
	}
	return teardown(ctx, r.Conf, r.HostNS, store, r.Key)
}

// teardown is DEL's work, shared with GC. The intent record goes last,
// and only when every other step succeeded, so a failed DEL can be retried.
func teardown(ctx context.Context, c *Conf, host *netns.Handle, store *state.Store, key netconf.Key) error {
	rec, recErr := store.GetAttachment(key)
	backend, hostVeth := c.FirewallBackend, veth.HostName(key)
	if rec != nil && rec.Objects["firewall"] != "" {
		backend = rec.Objects["firewall"] // the one ADD used, even if the config changed since
	}
	// The node's reaper deletes the veth (its peer goes with it) and waits
	// for the kernel to free it; the node-side steps go on meanwhile, in
	// case it falls back to deleting here.
	vethDone := make(chan error, 1)
	go func() { vethDone <- reaper.DelLink(host, host, hostVeth, "veth") }()
	var errs []error
	if fw, err := dnat.New(backend, host, store); err != nil {
		errs = append(errs, err)
	} else {
		errs = append(errs, fw.Del(ctx, network(c, nil), key)) // before the addresses can be reused
	}
	errs = append(errs, hostport.Release(ctx, store, key))
	errs = append(errs, <-vethDone) // the address is free once no link holds it
	if c.ipam != nil {
		errs = append(errs, ipam.Release(ctx, c.ipam, key))
	}
	errs = append(errs, netns.Forget(store, key))
	if err := errors.Join(errs...); err != nil {
		return errors.Join(err, recErr)
	}
	return store.DelAttachment(key)
}
