package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/state"
)

// openTarget opens the target's namespace: a path as it is, a container
// ID through the records (checked against the recorded device+inode). It
// refuses the container itself and, without allowHostNetwork, the host.
func openTarget(s *state.Store, r *cniplugin.Request[*Conf]) (*netns.Handle, error) {
	c := r.Conf
	var (
		h   *netns.Handle
		err error
	)
	switch {
	case strings.HasPrefix(c.Target, "/"):
		h, err = netns.Open(c.Target)
	case c.Target == r.Key.ContainerID:
		return nil, cnierr.Errorf(cnierr.InvalidConfig, "target %q (%s) is this container itself", c.Target, c.From)
	case netconf.ValidateContainerID(c.Target) != nil:
		return nil, cnierr.Errorf(cnierr.InvalidConfig, "target %q (%s) is neither an absolute namespace path nor a container ID", c.Target, c.From)
	default:
		h, _, err = netns.Lookup(s, c.Target)
	}
	if err != nil {
		return nil, fmt.Errorf("target %q (%s): %w", c.Target, c.From, err)
	}
	if err := refuse(r, h); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

func refuse(r *cniplugin.Request[*Conf], h *netns.Handle) error {
	c := r.Conf
	if r.NetNSPath != "" && filepath.Clean(h.Path) == filepath.Clean(r.NetNSPath) {
		return cnierr.Errorf(cnierr.InvalidConfig, "target %q (%s) is this container's own CNI_NETNS", c.Target, c.From)
	}
	if h.ID() == r.HostNS.ID() && !c.AllowHostNetwork {
		return cnierr.Errorf(cnierr.InvalidNetNS, `target %q (%s) is the host's network namespace: set "allowHostNetwork": true to allow joining it (or use hostns)`, c.Target, c.From)
	}
	return nil
}
