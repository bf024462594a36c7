package main

import (
	"context"
	"fmt"
	"net"

	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/ipam"
	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/state"
)

// status reports whether ADD can work: the master exists and is up (not
// checkable with linkInContainer, where it lives in each container), the
// state dir is writable, and IPAM is ready. A missing or down master is
// code 51 when attachments of the network exist (they lost their link or
// their carrier), 50 otherwise. A full pool is not a STATUS failure.
func status(ctx context.Context, r *cniplugin.Request[*Conf]) error {
	c := r.Conf
	st, err := state.OpenWritable(ctx)
	if err != nil {
		return err
	}
	if !c.LinkInContainer {
		if err := parentUsable(r.HostNS, c.Master); err != nil {
			code := cnierr.NotAvailable
			recs, _ := st.Attachments(r.Key.Network)
			for _, rec := range recs {
				if rec.Plugin == "macvlan" {
					code = cnierr.NotAvailableLimited
				}
			}
			return cnierr.Wrap(code, err)
		}
	}
	if c.ipam != nil {
		return ipam.Status(ctx, c.ipam)
	}
	return nil
}

// parentUsable is findParent plus up and the carrier: ADD accepts a down
// master, but a master down or without carrier (cable out, peer down)
// carries no container's traffic.
func parentUsable(ns *netns.Handle, name string) error {
	l, err := findParent(ns, name)
	if err != nil {
		return err
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("master %q is down: %w", l.Attrs().Name, ErrParent)
	}
	if l.Attrs().RawFlags&unix.IFF_LOWER_UP == 0 {
		return fmt.Errorf("master %q has no carrier: %w", l.Attrs().Name, ErrParent)
	}
	return nil
}
