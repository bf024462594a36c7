package dnat

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path"
	"slices"

	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/state"
)

// record is what Add wrote for one attachment, so that Del, knowing only
// the key, removes exactly those objects (by rebuilding them) without a
// ruleset dump. It is written before the rules, so a crash in between
// leaves a record that a later Del or GC completes.
type record struct {
	Backend string         `json:"backend"`
	Key     netconf.Key    `json:"key"`
	Addrs   []netip.Addr   `json:"addrs,omitempty"`
	Ports   []netconf.Port `json:"ports,omitempty"`
}

func (r *record) attachment() *Attachment {
	return &Attachment{Key: r.Key, Addrs: r.Addrs, Ports: r.Ports}
}

// netRecord is the network config its shared rules were built from, to
// notice a changed config on the fast path, and the iptables flavors and
// families (fwdState ids) whose dropping FORWARD policy it was guarded in.
type netRecord struct {
	Backend string   `json:"backend"`
	Network Network  `json:"network"`
	Guarded []string `json:"guarded,omitempty"`
	Layout  int      `json:"layout,omitempty"` // of the backend's shared rules (iptables: iptLayout)
}

// records keeps the per-backend state files under the store:
// dnat/<backend>/<network hash>/<key hash> and dnat/<backend>/net/<network hash>.
type records struct {
	store   *state.Store
	backend string
	layout  int // written into network records
}

func (r records) dir(network string) string {
	return path.Join("dnat", r.backend, netconf.NetworkHash(network))
}

func (r records) attPath(k netconf.Key) string { return path.Join(r.dir(k.Network), k.Hash()) }

// netDir holds one record per network of the backend.
func (r records) netDir() string { return path.Join("dnat", r.backend, "net") }

func (r records) netPath(network string) string {
	return path.Join(r.netDir(), netconf.NetworkHash(network))
}

// nets returns the record of every network of the backend, and the errors
// of those it could not read.
func (r records) nets() ([]*netRecord, error) {
	names, err := r.store.List(r.netDir())
	errs := []error{err}
	var out []*netRecord
	for _, name := range names {
		var rec netRecord
		if ok, err := r.store.Get(path.Join(r.netDir(), name), &rec); err != nil {
			errs = append(errs, err)
		} else if ok {
			out = append(out, &rec)
		}
	}
	return out, errors.Join(errs...)
}

func (r records) put(a *Attachment) error {
	return r.store.Put(r.attPath(a.Key), &record{Backend: r.backend, Key: a.Key, Addrs: a.Addrs, Ports: a.Ports})
}

// get returns the record of k, or nil when there is none.
func (r records) get(k netconf.Key) (*record, error) {
	var rec record
	ok, err := r.store.Get(r.attPath(k), &rec)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, nil
	}
	if rec.Key != k {
		return nil, fmt.Errorf("%s: %w: key %v, want %v", r.attPath(k), state.ErrCorrupt, rec.Key, k)
	}
	return &rec, nil
}

func (r records) del(k netconf.Key) error { return r.store.Del(r.attPath(k)) }

// list returns the records of network's attachments; unreadable files are
// reported and skipped.
func (r records) list(network string) ([]*record, error) {
	names, err := r.store.List(r.dir(network))
	if err != nil {
		return nil, err
	}
	var out []*record
	var errs []error
	for _, name := range names {
		var rec record
		if _, err := r.store.Get(path.Join(r.dir(network), name), &rec); err != nil {
			errs = append(errs, err)
			continue
		}
		if rec.Key.Network != network || rec.Key.Hash() != name {
			errs = append(errs, fmt.Errorf("%s: %w: holds %v", name, state.ErrCorrupt, rec.Key))
			continue
		}
		out = append(out, &rec)
	}
	return out, errors.Join(errs...)
}

// gc deletes network n's recorded attachments not in valid with del and,
// with none left, its own objects with removeNetwork: both backends' GC.
func (r records) gc(ctx context.Context, n *Network, valid []netconf.Key,
	del func(context.Context, *Network, netconf.Key) error, removeNetwork func(context.Context, *Network) error) error {
	if err := n.validate(); err != nil {
		return err
	}
	recs, err := r.list(n.Name)
	errs := []error{err}
	left := 0
	for _, rec := range recs {
		if slices.Contains(valid, rec.Key) {
			left++
			continue
		}
		errs = append(errs, del(ctx, n, rec.Key))
	}
	if left == 0 {
		errs = append(errs, removeNetwork(ctx, n))
	}
	return errors.Join(errs...)
}

// getNet returns network's record, or nil when there is none.
func (r records) getNet(network string) (*netRecord, error) {
	var rec netRecord
	ok, err := r.store.Get(r.netPath(network), &rec)
	if err != nil || !ok {
		return nil, err
	}
	return &rec, nil
}

func (r records) putNet(n *Network, guarded []string) error {
	return r.store.Put(r.netPath(n.Name), &netRecord{Backend: r.backend, Network: *n, Guarded: guarded, Layout: r.layout})
}

// current reports whether rec describes n's rules as they are wanted.
func (rec *netRecord) current(n *Network) bool {
	return rec != nil && sameNetwork(&rec.Network, n)
}

func (r records) delNet(network string) error { return r.store.Del(r.netPath(network)) }

// lock serialises creation and removal of shared rules on this host.
func (r records) lockName() string { return "dnat-" + r.backend }
