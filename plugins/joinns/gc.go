package main

import (
	"context"
	"errors"

	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/state"
)

// gc drops the records of this network's attachments that are not in
// cni.dev/valid-attachments.
func gc(ctx context.Context, r *cniplugin.Request[*Conf]) error {
	s, err := state.Open(ctx)
	if err != nil {
		return err
	}
	valid := netconf.ValidKeys(r.Key.Network, r.Base.ValidAttachments)
	return errors.Join(netns.GCRecords(ctx, s, r.Key.Network, valid), netns.RepairGC(ctx, s, r.Key.Network, valid))
}

// status fails (50) only when the state store is not usable.
func status(ctx context.Context, _ *cniplugin.Request[*Conf]) error {
	_, err := state.OpenWritable(ctx)
	return err
}
