package dnat

import (
	"errors"
	"path/filepath"
	"strings"

	"github.com/google/nftables"
)

// iptMarks are one chain of ours per table. iptables-restore deletes
// every user chain of a table it restores (netfilter-persistent, a
// firewalld reload) and `nft flush ruleset` every table, so a missing
// one means the node's firewall reloaded and our rules went with it.
func iptMarks() []iptRule {
	return []iptRule{{Table: "raw", Chain: iptRaw}, {Table: "filter", Chain: iptDrop}, {Table: "nat", Chain: iptDNAT}}
}

// iptProbe is what the fast path learns about network n.
type iptProbe struct {
	marked bool       // our chains exist in the kernel for n's families
	rec    *netRecord // what n's rules were built from
	fwd    []fwdState // the hosts' iptables FORWARD policies
}

// built reports whether n's rules and our chains are in the kernel as
// this layout makes them.
func (p iptProbe) built(n *Network) bool {
	return p.marked && p.rec.current(n) && p.rec.Layout == iptLayout
}

func (p iptProbe) current(n *Network) bool {
	return p.built(n) && len(unguarded(p.fwd, p.rec.Guarded)) == 0
}

// probe reads n's record, the FORWARD policies and our chains without
// running iptables: the chains of iptables-nft are GETs in the policies'
// round trip, those of iptables-legacy a getsockopt per table.
func (b *iptBackend) probe(n *Network) (iptProbe, error) {
	var p iptProbe
	c, err := openNft(b.host)
	if err != nil {
		return p, err
	}
	defer c.close()
	fams := families(n)
	var gets []*nftGet
	for _, v4 := range fams {
		for _, m := range iptMarks() {
			gets = append(gets, getChain(ipFamily(v4), m.Table, m.Chain))
		}
	}
	if p.fwd, err = b.guard.states(c, n, gets...); err != nil {
		return p, err
	}
	if p.marked, err = b.marked(fams, gets); err != nil {
		return p, err
	}
	p.rec, err = b.rec.getNet(n.Name)
	return p, err
}

// marked reports whether every mark exists in the tables the backend's
// iptables writes (both flavors' when its binary does not say which).
func (b *iptBackend) marked(fams []bool, gets []*nftGet) (bool, error) {
	var errs []error
	all := true
	for i, v4 := range fams {
		fl := kernelFlavor(b.flavor, v4)
		for j, m := range iptMarks() {
			inNft, err := gets[i*len(iptMarks())+j].found()
			errs = append(errs, err)
			var inLegacy bool
			if fl != FlavorNft {
				errs = append(errs, b.host.Do(func() (err error) { inLegacy, err = legacyHasTableChain(v4, m.Table, m.Chain); return }))
			}
			switch fl {
			case FlavorNft:
				all = all && inNft
			case FlavorLegacy:
				all = all && inLegacy
			default:
				all = all && (inNft || inLegacy)
			}
		}
	}
	return all, errors.Join(errs...)
}

// legacyHasTableChain reports whether a family's iptables-legacy table
// holds chain.
func legacyHasTableChain(v4 bool, table, chain string) (bool, error) {
	blob, _, exists, err := legacyTable(v4, table)
	return exists && err == nil && legacyHasChain(blob, chain), err
}

func ipFamily(v4 bool) nftables.TableFamily {
	if v4 {
		return nftables.TableFamilyIPv4
	}
	return nftables.TableFamilyIPv6
}

// kernelFlavor names the flavor whose tables the backend's binary writes:
// the one asked for or, for FlavorDefault, the one `iptables` links to
// (Debian's alternatives: xtables-nft-multi or xtables-legacy-multi);
// FlavorDefault when the name says neither.
func kernelFlavor(flavor string, v4 bool) string {
	if flavor != FlavorDefault {
		return flavor
	}
	p, err := iptBinary(flavor, v4)
	if err != nil {
		return FlavorDefault
	}
	if p, err = filepath.EvalSymlinks(p); err != nil {
		return FlavorDefault
	}
	switch base := filepath.Base(p); {
	case strings.Contains(base, "legacy"):
		return FlavorLegacy
	case strings.Contains(base, "nft"):
		return FlavorNft
	}
	return FlavorDefault
}
