package main

import (
	"context"
	"errors"
	"path"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/ipam"
	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/state"
)

// gc removes what attachments of this network left behind when they are
// not in cni.dev/valid-attachments: their links (if their namespace still
// exists), shim references and routes, intent records and addresses. It
// continues past errors and joins them.
func gc(ctx context.Context, r *cniplugin.Request[*Conf]) error {
	st, err := state.Open(ctx)
	if err != nil {
		return err
	}
	valid := map[[2]string]bool{}
	for _, a := range r.Base.ValidAttachments {
		valid[[2]string{a.ContainerID, a.IfName}] = true
	}
	stale := func(k netconf.Key) bool { return !valid[[2]string{k.ContainerID, k.IfName}] }
	network := r.Key.Network

	recs, err := st.Attachments(network)
	errs := []error{err}
	for _, rec := range recs {
		if rec.Plugin != "macvlan" || !stale(rec.Key()) {
			continue
		}
		if err := delRecordedLink(r.HostNS, rec); err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, st.DelAttachment(rec.Key()))
	}
	keep, err := gcShims(ctx, st, r, stale)
	errs = append(errs, err, netns.GCRecords(ctx, st, network, netconf.ValidKeys(network, r.Base.ValidAttachments)))
	if c := r.Conf; c.ipam != nil {
		errs = append(errs, ipam.GC(ctx, c.ipam, append(r.Base.ValidAttachments, keep...)))
	}
	return errors.Join(errs...)
}

// gcShims drops stale references of this network on every parent's shim,
// then what no reference needs. It returns the pool entries of the shim
// addresses still in use, which IPAM's GC must keep.
func gcShims(ctx context.Context, st *state.Store, r *cniplugin.Request[*Conf], stale func(netconf.Key) bool) ([]types.GCAttachment, error) {
	parents, err := st.List(path.Join("macvlan", "shim"))
	if err != nil {
		return nil, err
	}
	var keep []types.GCAttachment
	var errs []error
	for _, parent := range parents {
		k, err := gcShim(ctx, st, r, parent, stale)
		errs = append(errs, err)
		keep = append(keep, k...)
	}
	return keep, errors.Join(errs...)
}

func gcShim(ctx context.Context, st *state.Store, r *cniplugin.Request[*Conf], parent string, stale func(netconf.Key) bool) ([]types.GCAttachment, error) {
	network := r.Key.Network
	s, unlock, err := openShim(ctx, st, r.HostNS, parent, r.Conf)
	if err != nil {
		return nil, err
	}
	defer unlock()
	names, err := st.List(s.refDir(network))
	errs := []error{err}
	for _, n := range names {
		if !strings.HasSuffix(n, ".json") {
			continue
		}
		var ref shimRef
		ok, err := st.Get(path.Join(s.refDir(network), n), &ref)
		switch {
		case !ok:
			continue
		case err != nil || ref.Network != network || ref.key().Hash()+".json" != n:
			// Unreadable or misnamed: nothing to route, drop it.
			errs = append(errs, err, st.Del(path.Join(s.refDir(network), n)))
		case stale(ref.key()):
			errs = append(errs, s.delRoutes(ref.Addrs), st.Del(path.Join(s.refDir(network), n)))
		}
	}
	errs = append(errs, s.prune(ctx, network, ""))
	if has, err := hasEntries(st.Path(s.refDir(network)), ".json", ""); err != nil || !has {
		return nil, errors.Join(append(errs, err)...)
	}
	k := shimPoolKey(network, parent)
	return []types.GCAttachment{{ContainerID: k.ContainerID, IfName: k.IfName}}, errors.Join(errs...)
}
