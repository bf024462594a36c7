package dnat

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
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
}

func newNft(host *netns.Handle, store *state.Store) *nftBackend {
	return &nftBackend{host: host, rec: records{store: store, backend: BackendNftables}, guard: newFwdGuard(host)}
}

// conn opens one netlink socket in the host namespace for a whole verb.
func (b *nftBackend) conn() (*nftables.Conn, error) {
	opts := []nftables.ConnOption{nftables.AsLasting()}
	if !b.host.IsSelf() {
		opts = append(opts, nftables.WithNetNSFd(b.host.Fd()))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, cnierr.Wrap(cnierr.NotAvailable, fmt.Errorf("open nftables netlink socket: %w", err))
	}
	return c, nil
}

func comment(s string) []byte { return userdata.AppendString(nil, userdata.TypeComment, s) }

func addRules(c *nftables.Conn, rs []nftRule, tagText string) {
	for _, r := range rs {
		c.AddRule(&nftables.Rule{Table: nftTable, Chain: regularChain(r.Chain), Exprs: r.Exprs, UserData: comment(tagText)})
	}
}

func isNotExist(err error) bool { return errors.Is(err, unix.ENOENT) }

// Add installs, in the host namespace, the network's shared objects when
// missing and the attachment's chain and map elements in one batch.
// Equivalent to: nft -f - <<< 'add chain inet netdrivers a-HASH; add rule ...; add element ...'
func (b *nftBackend) Add(ctx context.Context, n *Network, a *Attachment) (err error) {
	ms, err := checkAdd(n, a)
	if err != nil {
		return err
	}
	c, err := b.conn()
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	if err := b.ensureNetwork(ctx, c, n); err != nil {
		return err
	}
	if old, err := b.rec.get(a.Key); err != nil || old != nil {
		// An ADD without DEL before: remove what it left first.
		if err := errors.Join(err, b.delAttachment(c, a.Key, old)); err != nil {
			return err
		}
	}
	var u undo.Stack
	defer u.OnError(&err)
	if err := b.rec.put(a); err != nil {
		return err
	}
	u.Push(func() error { return b.rec.del(a.Key) })
	ch := c.AddChain(regularChain(attChainName(a.Key)))
	c.FlushChain(ch)
	addRules(c, attRules(a.Key, ms), tag(a.Key))
	for _, set := range []string{setPub4, setPub6, setPubAny} {
		if elems := attElems(a.Key, ms)[set]; len(elems) > 0 {
			if err := c.SetAddElements(&nftables.Set{Table: nftTable, Name: set, IsMap: true}, elems); err != nil {
				return fmt.Errorf("add %s elements: %w", set, err)
			}
		}
	}
	if err := c.Flush(); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("%w: %v: %w", ErrPortInUse, a.Ports, err)
		}
		return cnierr.Wrap(cnierr.IOFailure, fmt.Errorf("add nftables rules of %s: %w", a.Key.Hash(), err))
	}
	u.Push(func() error {
		return b.delAttachment(c, a.Key, &record{Key: a.Key, Addrs: a.Addrs, Ports: a.Ports})
	})
	return flushUDP(b.host, udpPorts(ms))
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

// Del removes the attachment's chain and map elements. It needs no dump
// when Add's record exists; without one it looks for the chain and, only
// if it is there, scans the maps for elements entering it.
// Equivalent to: nft delete element ...; nft delete chain inet netdrivers a-HASH
func (b *nftBackend) Del(ctx context.Context, n *Network, key netconf.Key) error {
	if err := validKey(key); err != nil {
		return err
	}
	rec, err := b.rec.get(key)
	if err != nil {
		rec = nil // unreadable: fall back to the scan, then remove it
	}
	c, cerr := b.conn()
	if cerr != nil {
		return errors.Join(err, cerr)
	}
	defer c.CloseLasting()
	if derr := b.delAttachment(c, key, rec); derr != nil {
		return errors.Join(err, derr)
	}
	return b.rec.del(key)
}

// delAttachment removes an attachment's objects: in one batch when rec
// says what they are, else (or when that batch finds some gone) one by one.
func (b *nftBackend) delAttachment(c *nftables.Conn, key netconf.Key, rec *record) error {
	var ms []mapping
	if rec != nil {
		ms, _ = rec.attachment().mappings(&Network{})
		for set, elems := range attElems(key, ms) {
			c.SetDeleteElements(&nftables.Set{Table: nftTable, Name: set, IsMap: true}, elems)
		}
		ch := regularChain(attChainName(key))
		c.FlushChain(ch)
		c.DelChain(ch)
		err := c.Flush()
		if err == nil || isNotExist(err) && !b.chainExists(c, attChainName(key)) {
			return flushUDP(b.host, udpPorts(ms))
		}
	}
	return errors.Join(b.delSlow(c, key), flushUDP(b.host, udpPorts(ms)))
}

func (b *nftBackend) chainExists(c *nftables.Conn, name string) bool {
	_, err := c.ListChain(nftTable, name)
	return err == nil
}

// delSlow removes an attachment whose record is missing or whose objects
// are partly gone: it scans the published maps for elements entering its
// chain (O(published ports), the one dump on this path) and deletes each
// object on its own, ignoring what is already gone.
func (b *nftBackend) delSlow(c *nftables.Conn, key netconf.Key) error {
	name := attChainName(key)
	if !b.chainExists(c, name) {
		return nil
	}
	var errs []error
	for _, s := range globalSets()[:3] {
		elems, err := c.GetSetElements(s)
		if err != nil {
			if !isNotExist(err) {
				errs = append(errs, fmt.Errorf("list %s: %w", s.Name, err))
			}
			continue
		}
		var mine []nftables.SetElement
		for _, e := range elems {
			if elemChain(e) == name {
				mine = append(mine, nftables.SetElement{Key: e.Key})
			}
		}
		if len(mine) > 0 {
			c.SetDeleteElements(s, mine)
			if err := c.Flush(); err != nil && !isNotExist(err) {
				errs = append(errs, fmt.Errorf("delete %s elements of %s: %w", s.Name, name, err))
			}
		}
	}
	ch := regularChain(name)
	c.FlushChain(ch)
	c.DelChain(ch)
	if err := c.Flush(); err != nil && !isNotExist(err) {
		errs = append(errs, fmt.Errorf("delete chain %s: %w", name, err))
	}
	return errors.Join(errs...)
}

// Check verifies the network's chains, the attachment's chain and rules,
// its map elements and the sysctls, naming each thing that is missing.
func (b *nftBackend) Check(ctx context.Context, n *Network, a *Attachment) error {
	ms, err := checkAdd(n, a)
	if err != nil {
		return err
	}
	c, err := b.conn()
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	var errs []error
	for _, ch := range append(netChains(n.Name), regularChain(attChainName(a.Key))) {
		if !b.chainExists(c, ch.Name) {
			errs = append(errs, fmt.Errorf("%w: chain inet %s %s", ErrMissing, tableName, ch.Name))
		}
	}
	if rules, err := c.GetRules(nftTable, regularChain(attChainName(a.Key))); err == nil && len(rules) != len(ms) {
		errs = append(errs, fmt.Errorf("%w: chain %s has %d rules, want %d", ErrMissing, attChainName(a.Key), len(rules), len(ms)))
	}
	for set, want := range attElems(a.Key, ms) {
		have, err := c.GetSetElements(&nftables.Set{Table: nftTable, Name: set, IsMap: true})
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: map %s: %w", ErrMissing, set, err))
			continue
		}
		for _, w := range want {
			if !slices.ContainsFunc(have, func(h nftables.SetElement) bool {
				return string(h.Key) == string(w.Key) && elemChain(h) == w.VerdictData.Chain
			}) {
				errs = append(errs, fmt.Errorf("%w: element of map %s for %s", ErrMissing, set, describeKey(set, w.Key)))
			}
		}
	}
	errs = append(errs, checkSysctls(b.host, n))
	return errors.Join(errs...)
}

// GC deletes the attachments of n not in valid and, when none is left,
// n's shared objects (and the table once no network uses it).
func (b *nftBackend) GC(ctx context.Context, n *Network, valid []netconf.Key) error {
	if err := n.validate(); err != nil {
		return err
	}
	recs, err := b.rec.list(n.Name)
	errs := []error{err}
	left := 0
	for _, r := range recs {
		if slices.Contains(valid, r.Key) {
			left++
			continue
		}
		errs = append(errs, b.Del(ctx, n, r.Key))
	}
	if left == 0 {
		errs = append(errs, b.removeNetwork(ctx, n))
	}
	return errors.Join(errs...)
}

// Status checks that nftables answers in the host namespace.
func (b *nftBackend) Status(ctx context.Context) error {
	c, err := b.conn()
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	if _, err := c.ListTablesOfFamily(nftables.TableFamilyINet); err != nil {
		return cnierr.Wrap(cnierr.NotAvailable, fmt.Errorf("list nftables tables: %w", err))
	}
	return nil
}

// elemChain returns the chain a verdict-map element jumps to. The library
// leaves the verdict undecoded in Val: NFTA_VERDICT_CODE, NFTA_VERDICT_CHAIN.
func elemChain(e nftables.SetElement) string {
	if e.VerdictData != nil {
		return e.VerdictData.Chain
	}
	ad, err := netlink.NewAttributeDecoder(e.Val)
	if err != nil {
		return ""
	}
	for ad.Next() {
		if ad.Type() == unix.NFTA_VERDICT_CHAIN {
			return strings.TrimRight(ad.String(), "\x00")
		}
	}
	return ""
}
