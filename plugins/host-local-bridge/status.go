package main

import (
	"context"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/dnat"
	"github.com/netdrivers/netdrivers/pkg/ipam"
	"github.com/netdrivers/netdrivers/pkg/state"
)

// status fails only for node-wide faults: the state or address store not
// writable, the packet filter unusable. A missing bridge is fine (ADD
// creates it); a full pool is an ADD error, never a STATUS one.
func status(ctx context.Context, r *cniplugin.Request[*Conf]) error {
	return asUnavailable(nodeStatus(ctx, r))
}

func nodeStatus(ctx context.Context, r *cniplugin.Request[*Conf]) error {
	store, err := state.OpenWritable(ctx)
	if err != nil {
		return err
	}
	if r.Conf.ipam != nil {
		if err := ipam.Status(ctx, r.Conf.ipam); err != nil {
			return err
		}
	}
	fw, err := dnat.New(r.Conf.FirewallBackend, r.HostNS, store)
	if err != nil {
		return err
	}
	return fw.Status(ctx)
}

// asUnavailable gives STATUS failures code 50 unless they carry 50 or 51.
func asUnavailable(err error) error {
	if err == nil {
		return nil
	}
	if c := cnierr.CodeOf(err); c == cnierr.NotAvailable || c == cnierr.NotAvailableLimited {
		return err
	}
	return cnierr.Errorf(cnierr.NotAvailable, "host-local-bridge cannot serve ADD: %w", err)
}
