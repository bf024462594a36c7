package main

import (
	"context"
	"errors"

	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/hostport"
	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/state"
)

// del releases the attachment's port reservations and record, found from
// its key alone. It never touches host networking, nor the CNI_NETNS path
// (the runtime unmounts and removes it) but to repair a re-bind a crash
// cut in half, and gone is success.
func del(ctx context.Context, r *cniplugin.Request[*Conf]) error {
	s, err := state.Open(ctx)
	if err != nil {
		return err
	}
	return errors.Join(hostport.Release(ctx, s, r.Key), netns.Repair(s, r.Key), netns.Forget(s, r.Key))
}
