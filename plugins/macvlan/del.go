package main

import (
	"context"
	"errors"
	"path"
	"path/filepath"
	"slices"

	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/ipam"
	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/safefile"
	"github.com/netdrivers/netdrivers/pkg/state"
)

// del undoes ADD from the key and the intent record: the shim reference,
// the container link, IPAM release. Every step runs; gone is success;
// the record goes only when all succeeded, so a failed DEL can be retried.
func del(ctx context.Context, r *cniplugin.Request[*Conf]) error {
	c := r.Conf
	st, err := state.Open(ctx)
	if err != nil {
		return err
	}
	rec, recErr := st.GetAttachment(r.Key)
	// The address is released last: once free, a concurrent ADD can take
	// it, and its shim route (same destination) would go with ours.
	errs := []error{recErr, detachShims(ctx, st, r.HostNS, c, r.Key), netns.Forget(st, r.Key)}
	if r.ContNS != nil {
		errs = append(errs, delMacvlan(r.HostNS, r.ContNS, r.Key.IfName))
	} else if rec != nil {
		errs = append(errs, delRecordedLink(r.HostNS, rec))
	}
	if c.ipam != nil {
		errs = append(errs, ipam.Release(ctx, c.ipam, r.Key))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return st.DelAttachment(r.Key)
}

// delRecordedLink removes the link of a record whose namespace is still
// there although the caller did not name it (GC; a DEL without CNI_NETNS).
// The namespace must be the recorded one: a path reused by another
// container is left alone.
func delRecordedLink(host *netns.Handle, rec *state.Attachment) error {
	if rec.NetNS == "" {
		return nil
	}
	h, err := netns.Open(rec.NetNS)
	if err != nil {
		return nil // gone, and the link with it
	}
	defer h.Close()
	if h.ID().String() != rec.Objects["netnsID"] {
		return nil
	}
	return delMacvlan(host, h, rec.IfName)
}

// detachShims drops key's shim reference on every parent that holds one
// (found from the state, not the config, which may have changed), also
// one whose write a kill left under its staging name.
func detachShims(ctx context.Context, st *state.Store, host *netns.Handle, c *Conf, key netconf.Key) error {
	ref := st.Path("macvlan", "shim", "*", netconf.NetworkHash(key.Network), key.Hash()+".json")
	var parents []string
	for _, pattern := range []string{ref, safefile.TempName(ref)} {
		refs, _ := filepath.Glob(pattern) // the patterns are well-formed
		for _, r := range refs {
			if p := filepath.Base(path.Dir(path.Dir(r))); !slices.Contains(parents, p) {
				parents = append(parents, p)
			}
		}
	}
	var errs []error
	for _, parent := range parents {
		errs = append(errs, detachShim(ctx, st, host, parent, c, key))
	}
	return errors.Join(errs...)
}

func detachShim(ctx context.Context, st *state.Store, host *netns.Handle, parent string, c *Conf, key netconf.Key) error {
	s, unlock, err := openShim(ctx, st, host, parent, c)
	if err != nil {
		return err
	}
	defer unlock()
	return s.detach(ctx, key)
}
