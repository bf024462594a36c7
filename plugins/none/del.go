package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"

	"github.com/netdrivers/netdrivers/pkg/cniplugin"
)

// del changes nothing for "none" (the namespace is the container's to
// discard). As "loopback" it sets lo down, as the reference does.
func del(_ context.Context, r *cniplugin.Request[mode]) error {
	if r.Conf != "loopback" || r.ContNS == nil {
		return nil
	}
	nl, err := r.ContNS.Netlink()
	if err != nil {
		return err
	}
	lo, err := nl.LinkByName("lo")
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("find lo: %w", err)
	}
	if err := nl.LinkSetDown(lo); err != nil {
		return fmt.Errorf("set lo down: %w", err)
	}
	return nil
}
