package dnat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/state"
	"github.com/netdrivers/netdrivers/pkg/undo"
)

// nftBackend programs table inet netdrivers over netlink (no nft exec).
type nftBackend struct {
	host  *netns.Handle
	rec   records
	guard *fwdGuard
	// deleteOnly makes Del delete elements instead of retiring them, as it
	// does on (older) kernels that cannot update an element's timeout;
	// tests set it to cover that path.
	deleteOnly bool
	// retireAfter overrides the timeout retired elements get (tests
	// lengthen it to make the tick in which they still work observable).
	retireAfter time.Duration
}

func newNft(host *netns.Handle, store *state.Store) *nftBackend {
	return &nftBackend{host: host, rec: records{store: store, backend: BackendNftables}, guard: newFwdGuard(host)}
}

func comment(s string) []byte { return userdata.AppendString(nil, userdata.TypeComment, s) }

func addRules(c *nftables.Conn, rs []nftRule, tagText string) {
	for _, r := range rs {
		c.AddRule(&nftables.Rule{Table: nftTable, Chain: regularChain(r.Chain), Exprs: r.Exprs, UserData: comment(tagText)})
	}
}

func isNotExist(err error) bool { return errors.Is(err, unix.ENOENT) }

// Add installs, in the host namespace, the network's shared objects when
// missing and the attachment's map elements in one batch: no rule, no
// chain, nothing whose cost grows with the attachments already there.
// Equivalent to: nft create element inet netdrivers dnat4-any { tcp . 8080 : 10.244.1.10 . 80 } ...
func (b *nftBackend) Add(ctx context.Context, n *Network, a *Attachment) (err error) {
	ms, err := checkAdd(n, a)
	if err != nil {
		return err
	}
	elems := attElems(ms)
	var ahead []*nftGet // what is in the way, asked with the network's probe
	if len(elems) > 0 {
		ahead = elemGets(withMarker(a.Key, elems))
	}
	c, err := b.conn()
	if err != nil {
		return err
	}
	defer c.close()
	if err := b.ensureNetwork(ctx, c, n, ahead...); err != nil {
		return err
	}
	if old, err := b.rec.get(a.Key); err != nil || old != nil {
		// An ADD without DEL before (or an unreadable record): retire what it published first.
		if err := b.unpublish(c, a.Key, old); err != nil {
			return err
		}
		ahead = nil // ask again
	}
	var u undo.Stack
	defer u.OnError(&err)
	if err := b.rec.put(a); err != nil {
		return err
	}
	u.Push(func() error { return b.rec.del(a.Key) })
	if len(elems) > 0 {
		if err := b.publish(c, a.Key, elems, ahead); err != nil {
			return err
		}
		u.Push(func() error { return b.retire(c, a.Key, elems) })
	}
	return flushUDP(b.host, udpPorts(ms), 0)
}

// checkAdd validates a request before anything changes.
func checkAdd(n *Network, a *Attachment) ([]mapping, error) {
	if err := n.validate(); err != nil {
		return nil, err
	}
	ms, err := a.mappings(n)
	if err != nil {
		return nil, err
	}
	if a.Key.Network != n.Name {
		return nil, fmt.Errorf("%w: attachment of network %q added to network %q", ErrInvalid, a.Key.Network, n.Name)
	}
	return ms, nil
}

// publish adds an attachment's elements and its marker in one
// transaction that refuses existing elements, after making way for them
// (ahead holds the answers to elemGets, or is nil to ask now). A refused
// transaction is rolled back, which costs an RCU grace period, so what is
// in the way is looked at first; the kernel's refusal only settles races.
// A host port another attachment publishes fails with ErrPortInUse.
func (b *nftBackend) publish(c *nftConn, key netconf.Key, elems []pubElem, ahead []*nftGet) error {
	all := withMarker(key, elems)
	err := b.makeWay(c, key, all, ahead)
	if err == nil {
		err = addElems(c, key, all, 0, true)
	}
	for try := 0; try < 2 && (errors.Is(err, unix.EEXIST) || errors.Is(err, unix.EBUSY)); try++ {
		if err = b.makeWay(c, key, all, nil); err == nil {
			err = addElems(c, key, all, 0, true)
		}
	}
	switch {
	case err == nil || errors.Is(err, ErrPortInUse):
		return err
	case errors.Is(err, unix.EEXIST):
		return fmt.Errorf("%w: %w", ErrPortInUse, err)
	}
	return cnierr.Wrap(cnierr.IOFailure, fmt.Errorf("add nftables elements of %s: %w", key.Hash(), err))
}

// elemGets asks for each element.
func elemGets(elems []pubElem) []*nftGet {
	gets := make([]*nftGet, len(elems))
	for i, e := range elems {
		gets[i] = getElem(e.Map, e.Key)
	}
	return gets
}

// makeWay looks at what holds the keys of all (the answers in gets, or
// asked now): it waits for elements a Del is retiring (they expire within
// a tick), retires live ones of this attachment first (left by an Add
// whose record was lost), and names the owner of one that another
// attachment holds.
func (b *nftBackend) makeWay(c *nftConn, key netconf.Key, all []pubElem, gets []*nftGet) error {
	if gets == nil {
		if gets = elemGets(all); c.get(gets...) != nil {
			return nil // let the kernel decide
		}
	}
	var dying, stale []pubElem
	for i, g := range gets {
		got, ok, err := g.elem()
		switch {
		case err != nil:
			return fmt.Errorf("get element of %s for %s: %w", all[i].Map, all[i], err)
		case !ok:
		case got.Timeout > 0:
			dying = append(dying, all[i])
		case all[i].Map == setAtts || got.Comment == key.Hash():
			e := all[i]
			e.Val = got.Val
			stale = append(stale, e)
		default:
			return fmt.Errorf("%w: %s is published by %s", ErrPortInUse, all[i], ownerOf(c, got.Comment))
		}
	}
	if len(stale) > 0 {
		if err := expireElems(c, key, stale, b.retireTimeout()); err != nil {
			return err
		}
	}
	return waitGone(c, append(dying, stale...), b.retireTimeout())
}

// ownerOf names the attachment whose hash is h, from its marker's comment.
func ownerOf(c *nftConn, h string) string {
	if h == "" {
		return "an element not made by netdrivers"
	}
	g := getElem(setAtts, ifname(h[:min(len(h), 15)]))
	if c.get(g) == nil {
		if m, ok, _ := g.elem(); ok && m.Comment != "" {
			return m.Comment
		}
	}
	return "attachment " + h
}

// Del retires the attachment's map elements. It needs no dump when Add's
// record exists, and without one only when the attachments set says the
// attachment published something (a GET, as for containerd's second DEL).
// Equivalent to: nft add element inet netdrivers dnat4-any { tcp . 8080 timeout 1ms : 10.244.1.10 . 80 }
func (b *nftBackend) Del(ctx context.Context, n *Network, key netconf.Key) error {
	if err := validKey(key); err != nil {
		return err
	}
	rec, _ := b.rec.get(key) // unreadable: look in the maps instead, then remove it
	c, err := b.conn()
	if err != nil {
		return err
	}
	defer c.close()
	if err := b.unpublish(c, key, rec); err != nil {
		return err
	}
	return b.rec.del(key)
}

// unpublish retires the elements of key: those rec lists or, without a
// record, those the maps hold for it.
func (b *nftBackend) unpublish(c *nftConn, key netconf.Key, rec *record) error {
	if rec != nil {
		ms, _ := rec.attachment().mappings(&Network{})
		if len(ms) == 0 {
			return nil
		}
		return b.retire(c, key, attElems(ms))
	}
	elems, found, err := findElems(c, key)
	if err != nil || !found {
		return err
	}
	return b.retire(c, key, elems)
}

// findElems finds the elements of an attachment whose record is lost. It
// is one GET when the attachments set has no live marker for it, else one
// dump of each map, matching the owner comment.
func findElems(c *nftConn, key netconf.Key) (_ []pubElem, found bool, err error) {
	g := getElem(setAtts, attMarker(key).Key)
	if err := c.get(g); err != nil {
		return nil, false, err
	}
	m, ok, err := g.elem()
	if err != nil || !ok || m.Timeout > 0 {
		return nil, false, err
	}
	var out []pubElem
	for _, name := range pubMaps {
		elems, err := c.GetSetElements(&nftables.Set{Table: nftTable, Name: name, IsMap: true})
		if err != nil {
			return nil, true, fmt.Errorf("list map %s: %w", name, err)
		}
		for _, e := range elems {
			if pe, ok := elemFromKey(name, e.Key, e.Val); ok && e.Comment == key.Hash() && e.Timeout == 0 {
				out = append(out, pe)
			}
		}
	}
	return out, true, nil
}

// Check verifies the network's chains and, with one GET of each (all in
// one round trip), the attachment's map elements and marker, naming what
// is missing or different; then the sysctls.
func (b *nftBackend) Check(ctx context.Context, n *Network, a *Attachment) error {
	ms, err := checkAdd(n, a)
	if err != nil {
		return err
	}
	c, err := b.conn()
	if err != nil {
		return err
	}
	defer c.close()
	chains := append(netChains(n.Name), regularChain(chainPub))
	elems := attElems(ms)
	var gets []*nftGet
	for _, ch := range chains {
		gets = append(gets, getChain(nftables.TableFamilyINet, tableName, ch.Name))
	}
	for _, e := range elems {
		gets = append(gets, getElem(e.Map, e.Key))
	}
	marker := getElem(setAtts, attMarker(a.Key).Key)
	if len(elems) > 0 {
		gets = append(gets, marker)
	}
	if err := c.get(gets...); err != nil {
		return cnierr.Wrap(cnierr.IOFailure, err)
	}
	var errs []error
	for i, ch := range chains {
		switch ok, _, err := gets[i].chainPolicy(); {
		case err != nil:
			errs = append(errs, fmt.Errorf("get chain inet %s %s: %w", tableName, ch.Name, err))
		case !ok:
			errs = append(errs, fmt.Errorf("%w: chain inet %s %s", ErrMissing, tableName, ch.Name))
		}
	}
	for i, e := range elems {
		errs = append(errs, checkElem(e, a.Key, gets[len(chains)+i]))
	}
	if len(elems) > 0 {
		if m, ok, err := marker.elem(); err != nil || !ok || m.Timeout > 0 {
			errs = append(errs, fmt.Errorf("%w: set %s has no element for %s", ErrMissing, setAtts, a.Key.Hash()))
		}
	}
	errs = append(errs, checkSysctls(b.host, n))
	return errors.Join(errs...)
}

// checkElem compares one element the kernel returned with the one wanted.
func checkElem(want pubElem, key netconf.Key, g *nftGet) error {
	got, ok, err := g.elem()
	switch {
	case err != nil:
		return fmt.Errorf("get element of map %s for %s: %w", want.Map, want, err)
	case !ok:
		return fmt.Errorf("%w: map %s has no element for %s", ErrMissing, want.Map, want)
	case got.Timeout > 0:
		return fmt.Errorf("%w: the element of map %s for %s is being removed", ErrMissing, want.Map, want)
	case !bytes.Equal(got.Val, want.Val):
		return fmt.Errorf("%w: map %s sends %s to %s, want %s", ErrMissing, want.Map, want, valString(got.Val), valString(want.Val))
	case got.Comment != key.Hash():
		return fmt.Errorf("%w: the element of map %s for %s belongs to attachment %q", ErrMissing, want.Map, want, got.Comment)
	}
	return nil
}

// valString renders a map value (container address . port).
func valString(v []byte) string {
	if len(v) != 8 && len(v) != 20 {
		return fmt.Sprintf("%x", v)
	}
	a, _ := netip.AddrFromSlice(v[:len(v)-4])
	return netip.AddrPortFrom(a, uint16(v[len(v)-4])<<8|uint16(v[len(v)-3])).String()
}

// GC deletes the attachments of n not in valid and, when none is left,
// n's shared objects (and the table once no network uses it).
func (b *nftBackend) GC(ctx context.Context, n *Network, valid []netconf.Key) error {
	return b.rec.gc(ctx, n, valid, b.Del, b.removeNetwork)
}

// Status checks that nftables answers in the host namespace.
func (b *nftBackend) Status(ctx context.Context) error {
	c, err := b.conn()
	if err != nil {
		return err
	}
	defer c.close()
	if _, err := c.ListTablesOfFamily(nftables.TableFamilyINet); err != nil {
		return cnierr.Wrap(cnierr.NotAvailable, fmt.Errorf("list nftables tables: %w", err))
	}
	return nil
}
