package main

import (
	"context"
	"errors"

	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/state"
)

// del forgets the attachment's record. It never touches the target's
// interfaces, addresses or routes (they are its own container's, and other
// joiners'), nor the CNI_NETNS path (the runtime removes it); gone is
// success.
func del(ctx context.Context, r *cniplugin.Request[*Conf]) error {
	s, err := state.Open(ctx)
	if err != nil {
		return err
	}
	return errors.Join(netns.Repair(s, r.Key), netns.Forget(s, r.Key))
}
