package main

import (
	"context"
	"fmt"
	"slices"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/hostport"
	"github.com/netdrivers/netdrivers/pkg/state"
)

// check verifies that CNI_NETNS is the host's namespace, that the host
// still has the interfaces ADD reported, and that every requested port is
// still reserved for this attachment. It changes nothing.
func check(ctx context.Context, r *cniplugin.Request[*Conf]) error {
	if !r.Conf.AllowHostNetwork {
		return errNotAllowed
	}
	if r.ContNS == nil {
		return cnierr.Errorf(cnierr.InvalidNetNS, "CNI_NETNS %q: %w", r.NetNSPath, r.NetNSErr)
	}
	if r.ContNS.ID() != r.HostNS.ID() {
		return cnierr.Errorf(cnierr.InvalidNetNS, "CNI_NETNS %q is namespace %s, not the host's (%s): it was not re-bound, or was re-bound again since ADD",
			r.NetNSPath, r.ContNS.ID(), r.HostNS.ID())
	}
	prev, err := r.Base.Prev()
	if err != nil {
		return err
	}
	if prev != nil {
		for _, iface := range prev.Interfaces {
			if iface.Sandbox == "" {
				continue
			}
			if _, err := r.HostNS.Link(iface.Name); err != nil {
				return fmt.Errorf("interface %s reported by ADD is no longer on the host: %w", iface.Name, err)
			}
		}
	}
	s, err := state.Open(ctx)
	if err != nil {
		return err
	}
	held, err := hostport.Held(ctx, s, r.Key)
	if err != nil {
		return err
	}
	for _, p := range r.Conf.Ports {
		if !slices.Contains(held, p) {
			return fmt.Errorf("host port %s is no longer reserved for %s (released by GC?)", p, r.Key.ContainerID)
		}
	}
	return nil
}
