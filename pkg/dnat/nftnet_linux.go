package dnat

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
)

// ensureNetwork makes network n's shared objects exist as n describes
// them. The fast path is one chain GET plus a small file read; creation
// and changes happen under the store lock, in one batch.
func (b *nftBackend) ensureNetwork(ctx context.Context, c *nftables.Conn, n *Network) error {
	if b.networkCurrent(c, n) {
		return ensureSysctls(b.host, n)
	}
	l, err := b.rec.store.Lock(ctx, b.rec.lockName())
	if err != nil {
		return err
	}
	defer l.Unlock()
	if b.networkCurrent(c, n) {
		return ensureSysctls(b.host, n)
	}
	old, _ := b.rec.getNet(n.Name)
	if err := b.writeNetwork(c, n, old); err != nil {
		return err
	}
	if err := ensureSysctls(b.host, n); err != nil {
		return err
	}
	if err := b.guard.ensure(n); err != nil {
		return err
	}
	return b.rec.putNet(n)
}

func (b *nftBackend) networkCurrent(c *nftables.Conn, n *Network) bool {
	if !b.chainExists(c, netChainName(n.Name, "post")) {
		return false
	}
	old, err := b.rec.getNet(n.Name)
	return err == nil && old != nil && sameNetwork(old, n)
}

// writeNetwork creates the table when missing and (re)writes n's chains,
// jumps and bridge set element, all in one batch.
func (b *nftBackend) writeNetwork(c *nftables.Conn, n *Network, old *Network) error {
	_, err := c.ListTableOfFamily(tableName, nftables.TableFamilyINet)
	switch {
	case isNotExist(err):
		createTable(c)
	case err != nil:
		return cnierr.Wrap(cnierr.IOFailure, fmt.Errorf("get table inet %s: %w", tableName, err))
	}
	exists := err == nil && b.chainExists(c, netChainName(n.Name, "post"))
	for _, ch := range netChains(n.Name) {
		c.AddChain(ch)
		if exists {
			c.FlushChain(ch)
		}
	}
	if !exists {
		addRules(c, netJumps(n.Name), netTag(n))
	}
	bridges := &nftables.Set{Table: nftTable, Name: setBridges, KeyType: nftables.TypeIFName}
	if old != nil && old.Bridge != n.Bridge {
		c.SetDeleteElements(bridges, []nftables.SetElement{{Key: ifname(old.Bridge)}})
	}
	c.SetAddElements(bridges, []nftables.SetElement{{Key: ifname(n.Bridge), Comment: n.Name}})
	addRules(c, netRules(n), netTag(n))
	if err := c.Flush(); err != nil {
		return cnierr.Wrap(cnierr.IOFailure, fmt.Errorf("add nftables rules of network %q: %w", n.Name, err))
	}
	return nil
}

// createTable queues the table, its base chains, maps and own rules.
func createTable(c *nftables.Conn) {
	c.AddTable(nftTable)
	for _, ch := range baseChains() {
		c.AddChain(ch)
	}
	c.AddChain(regularChain(chainPub))
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
	defer c.CloseLasting()
	errs := []error{b.deleteNetworkObjects(c, n)}
	errs = append(errs, b.guard.remove(n), b.rec.delNet(n.Name))
	if nets, err := b.rec.store.List(path.Join("dnat", b.rec.backend, "net")); err == nil && len(nets) == 0 {
		errs = append(errs, b.deleteTableIfUnused(c))
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
	bridges := &nftables.Set{Table: nftTable, Name: setBridges, KeyType: nftables.TypeIFName}
	c.SetDeleteElements(bridges, []nftables.SetElement{{Key: ifname(n.Bridge)}})
	if err := c.Flush(); err != nil && !isNotExist(err) {
		errs = append(errs, fmt.Errorf("delete bridge %s from set %s: %w", n.Bridge, setBridges, err))
	}
	return errors.Join(errs...)
}

// deleteTableIfUnused removes the table when it holds no chain of a
// network or an attachment any more.
func (b *nftBackend) deleteTableIfUnused(c *nftables.Conn) error {
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("list chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name == tableName && (strings.HasPrefix(ch.Name, "a-") || strings.HasPrefix(ch.Name, "n-")) {
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

// describeKey renders a published-map key for messages.
func describeKey(set string, key []byte) string {
	if len(key) < 12 {
		return fmt.Sprintf("%x", key)
	}
	head := len(key) - 8
	proto := map[byte]string{unix.IPPROTO_TCP: "tcp", unix.IPPROTO_UDP: "udp", unix.IPPROTO_SCTP: "sctp"}[key[head]]
	port := uint16(key[head+4])<<8 | uint16(key[head+5])
	host := "*"
	switch set {
	case setPub4, setPub6:
		a, _ := netip.AddrFromSlice(key[:head])
		host = a.String()
	case setPubAny:
		host = map[byte]string{unix.NFPROTO_IPV4: "*4", unix.NFPROTO_IPV6: "*6"}[key[0]]
	}
	return fmt.Sprintf("%s %s:%d", proto, host, port)
}
