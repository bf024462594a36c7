package main

import (
	"context"
	"errors"
	"strings"

	"github.com/netdrivers/netdrivers/pkg/bridge"
	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/dnat"
	"github.com/netdrivers/netdrivers/pkg/hostport"
	"github.com/netdrivers/netdrivers/pkg/ipam"
	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/state"
	"github.com/netdrivers/netdrivers/pkg/veth"
)

// gc removes every leftover of this network whose attachment is not in
// cni.dev/valid-attachments: recorded attachments (undone as DEL would),
// address store entries, firewall rules, port reservations, joinns records,
// and unrecorded veth ports of the network's own bridge. It continues past
// errors and joins them.
func gc(ctx context.Context, r *cniplugin.Request[*Conf]) error {
	c := r.Conf
	store, err := state.Open(ctx)
	if err != nil {
		return err
	}
	validKeys := netconf.ValidKeys(c.Name, r.Base.ValidAttachments)
	valid := map[netconf.Key]bool{}
	for _, k := range validKeys {
		valid[k] = true
	}
	var errs []error
	recs, err := store.Attachments(c.Name)
	errs = append(errs, err)
	for _, rec := range recs {
		if !valid[rec.Key()] {
			errs = append(errs, teardown(ctx, c, r.HostNS, store, rec.Key()))
		}
	}
	if c.ipam != nil {
		errs = append(errs, ipam.GC(ctx, c.ipam, r.Base.ValidAttachments))
	}
	if fw, err := dnat.New(c.FirewallBackend, r.HostNS, store); err != nil {
		errs = append(errs, err)
	} else {
		errs = append(errs, fw.GC(ctx, network(c, nil), validKeys))
	}
	errs = append(errs,
		hostport.GC(ctx, store, c.Name, validKeys),
		netns.GCRecords(ctx, store, c.Name, validKeys),
		gcPorts(r, c, validKeys),
	)
	return errors.Join(errs...)
}

// gcPorts deletes veth ports of the network's bridge that no valid
// attachment owns. Only on the bridge this network names by default: a
// bridge named in the config may be shared with other networks.
func gcPorts(r *cniplugin.Request[*Conf], c *Conf, valid []netconf.Key) error {
	if c.Bridge != defaultBridge(c.Name) {
		return nil
	}
	keep := map[string]bool{}
	for _, k := range valid {
		keep[veth.HostName(k)] = true
	}
	ports, err := bridge.Ports(r.HostNS, c.Bridge)
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range ports {
		name := p.Attrs().Name
		if p.Type() == "veth" && strings.HasPrefix(name, "veth") && !keep[name] {
			errs = append(errs, veth.Del(r.HostNS, name))
		}
	}
	return errors.Join(errs...)
}
