package dnat

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
)

// ensureNetwork makes network n's shared objects exist as n describes
// them, and the FORWARD guard where a policy drops. The fast path is one
// round trip of GETs (with the caller's own requests extra), a small file
// read and a getsockopt where iptables-legacy is loaded; creation and
// changes happen under the store lock, in one batch.
func (b *nftBackend) ensureNetwork(ctx context.Context, c *nftConn, n *Network, extra ...*nftGet) error {
	p, err := b.probe(c, n, extra...)
	if err == nil && p.current(n) {
		// Forwarding and route_localnet were set when the rules were made
		// (each /proc/sys lookup costs O(namespaces)); CHECK reports them.
		return nil
	}
	l, err := b.rec.store.Lock(ctx, b.rec.lockName())
	if err != nil {
		return err
	}
	defer l.Unlock()
	if p, err = b.probe(c, n, extra...); err != nil {
		return cnierr.Wrap(cnierr.IOFailure, err)
	}
	if !p.table || !p.chains || !p.rec.current(n) {
		if err := b.writeNetwork(c, n, p); err != nil {
			return err
		}
	}
	if err := ensureSysctls(b.host, n); err != nil {
		return err
	}
	var guarded []string
	if p.rec.current(n) {
		guarded = p.rec.Guarded
	}
	ids, err := b.guard.ensure(n, unguarded(p.fwd, guarded))
	if err != nil {
		return err
	}
	return b.rec.putNet(n, append(guarded, ids...))
}

// netProbe is what the fast path learns about network n.
type netProbe struct {
	table  bool       // the table has this layout (its attachments and layout sets exist)
	chains bool       // n's chains exist
	rec    *netRecord // what they were built from
	fwd    []fwdState // the hosts' iptables FORWARD policies
}

func (p netProbe) current(n *Network) bool {
	return p.table && p.chains && p.rec.current(n) && len(unguarded(p.fwd, p.rec.Guarded)) == 0
}

// probe asks for the attachments and layout sets (only chains of this
// layout are current), n's post chain, the FORWARD policies and extra in
// one round trip.
func (b *nftBackend) probe(c *nftConn, n *Network, extra ...*nftGet) (netProbe, error) {
	var p netProbe
	ours, layout := getSet(setAtts), getSet(setLayout)
	post := getChain(nftables.TableFamilyINet, tableName, netChainName(n.Name, "post"))
	fwd, err := b.guard.states(c, n, append([]*nftGet{ours, layout, post}, extra...)...)
	if err != nil {
		return p, err
	}
	p.fwd = fwd
	hasAtts, err := ours.found()
	if err != nil {
		return p, err
	}
	hasLayout, err := layout.found()
	if err != nil {
		return p, err
	}
	p.table = hasAtts && hasLayout
	if p.chains, err = post.found(); err != nil {
		return p, err
	}
	p.rec, err = b.rec.getNet(n.Name)
	return p, err
}

// writeNetwork creates the table's own objects when missing (or of an
// older layout) and (re)writes n's chains, jumps and bridge set element,
// all in one batch.
func (b *nftBackend) writeNetwork(c *nftConn, n *Network, p netProbe) error {
	if !p.table {
		createTable(c.Conn)
	}
	for _, ch := range netChains(n.Name) {
		c.AddChain(ch)
		if p.chains {
			c.FlushChain(ch)
		}
	}
	if !p.chains {
		addRules(c.Conn, netJumps(n.Name), netTag(n))
	}
	if p.rec != nil && p.rec.Network.Bridge != n.Bridge {
		c.SetDeleteElements(bridgeSet(), []nftables.SetElement{{Key: ifname(p.rec.Network.Bridge)}})
	}
	c.SetAddElements(bridgeSet(), []nftables.SetElement{{Key: ifname(n.Bridge), Comment: n.Name}})
	addRules(c.Conn, netRules(n), netTag(n))
	if err := c.Flush(); err != nil {
		return cnierr.Wrap(cnierr.IOFailure, fmt.Errorf("add nftables rules of network %q: %w", n.Name, err))
	}
	return nil
}

// createTable queues the table, its base chains, maps and own rules. On a
// table of the older layout (verdict maps into a chain per attachment) it
// rewrites the published chain; the old objects are left unused.
func createTable(c *nftables.Conn) {
	c.AddTable(nftTable)
	for _, ch := range baseChains() {
		c.AddChain(ch)
	}
	c.AddChain(regularChain(chainPub))
	for _, ch := range []string{chNatPre, chNatOut, chainPub} { // only the table's own rules
		c.FlushChain(regularChain(ch))
	}
	ids := map[string]uint32{}
	for _, s := range globalSets() {
		c.AddSet(s, nil) // errors only for anonymous or malformed sets
		ids[s.Name] = s.ID
	}
	rs := globalRules()
	for _, r := range rs {
		for _, e := range r.Exprs {
			if l, ok := e.(*expr.Lookup); ok {
				l.SetID = ids[l.SetName] // same batch: the kernel finds the set by ID
			}
		}
	}
	addRules(c, rs, "netdrivers")
}

// removeNetwork deletes n's chains, the jumps into them and its bridge
// element, then the table when no network of ours is left.
func (b *nftBackend) removeNetwork(ctx context.Context, n *Network) error {
	l, err := b.rec.store.Lock(ctx, b.rec.lockName())
	if err != nil {
		return err
	}
	defer l.Unlock()
	c, err := b.conn()
	if err != nil {
		return err
	}
	defer c.close()
	errs := []error{b.deleteNetworkObjects(c.Conn, n)}
	errs = append(errs, b.guard.remove(n), b.rec.delNet(n.Name))
	if nets, err := b.rec.store.List(b.rec.netDir()); err == nil && len(nets) == 0 {
		errs = append(errs, b.deleteTableIfUnused(c.Conn))
	}
	return errors.Join(errs...)
}

func (b *nftBackend) deleteNetworkObjects(c *nftables.Conn, n *Network) error {
	mine := map[string]bool{}
	for _, ch := range netChains(n.Name) {
		mine[ch.Name] = true
	}
	var errs []error
	for _, base := range []string{chRaw, chForward, chInput, chNatPost} {
		rules, err := c.GetRules(nftTable, regularChain(base))
		if err != nil {
			if !isNotExist(err) {
				errs = append(errs, fmt.Errorf("list chain %s: %w", base, err))
			}
			continue
		}
		for _, r := range rules {
			if v, ok := r.Exprs[len(r.Exprs)-1].(*expr.Verdict); ok && mine[v.Chain] {
				c.DelRule(r)
			}
		}
	}
	if err := c.Flush(); err != nil && !isNotExist(err) {
		errs = append(errs, fmt.Errorf("delete jumps of network %q: %w", n.Name, err))
	}
	for _, ch := range netChains(n.Name) {
		c.FlushChain(ch)
		c.DelChain(ch)
		if err := c.Flush(); err != nil && !isNotExist(err) {
			errs = append(errs, fmt.Errorf("delete chain %s: %w", ch.Name, err))
		}
	}
	c.SetDeleteElements(bridgeSet(), []nftables.SetElement{{Key: ifname(n.Bridge)}})
	if err := c.Flush(); err != nil && !isNotExist(err) {
		errs = append(errs, fmt.Errorf("delete bridge %s from set %s: %w", n.Bridge, setBridges, err))
	}
	return errors.Join(errs...)
}

// deleteTableIfUnused removes the table when it holds no network's chain
// any more (attachments exist only within networks).
func (b *nftBackend) deleteTableIfUnused(c *nftables.Conn) error {
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("list chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name == tableName && strings.HasPrefix(ch.Name, "n-") {
			return nil
		}
	}
	c.DelTable(nftTable)
	if err := c.Flush(); err != nil && !isNotExist(err) {
		return fmt.Errorf("delete table inet %s: %w", tableName, err)
	}
	return nil
}

// sameNetwork reports whether two network descriptions give the same rules.
func sameNetwork(a, b *Network) bool {
	return a.Name == b.Name && a.Bridge == b.Bridge && a.mode() == b.mode() &&
		a.Masquerade == b.Masquerade && a.Isolate == b.Isolate &&
		fmt.Sprint(a.Subnets) == fmt.Sprint(b.Subnets)
}
