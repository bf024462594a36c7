package dnat

import (
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/netdrivers/netdrivers/pkg/netconf"
)

// The nftables layout (rules as data; nft_linux.go sends them):
//
//	table inet netdrivers
//	  chain raw-prerouting  (filter prerouting -300)  jump n-<net>-raw per network
//	  chain forward         (filter forward 0)        jump n-<net>-fwd per network
//	  chain input           (filter input 0)          jump n-<net>-in per network
//	  chain nat-prerouting  (nat prerouting -100)     ip daddr 127.0.0.0/8 return; fib daddr type local jump published
//	  chain nat-output      (nat output -100)         fib daddr type local jump published
//	  chain nat-postrouting (nat postrouting 100)     jump n-<net>-post per network
//	  chain published       ip daddr . l4proto . th dport vmap @pub4 (and @pub6, @pubany)
//	  map pub4/pub6/pubany  (host address|nfproto) . proto . port : jump a-<attachment>
//	  set bridges           every netdrivers bridge (for Isolate)
//	  chain a-<attachment>  its DNAT rules
//
// Network chains hold only drops (filter) or NAT statements, so their
// order in the base chains does not matter. Attachments touch only their
// chain and their map elements: Add and Del are O(1) in their number.
const (
	tableName  = "netdrivers"
	chainPub   = "published"
	setPub4    = "pub4"
	setPub6    = "pub6"
	setPubAny  = "pubany"
	setBridges = "bridges"
)

var nftTable = &nftables.Table{Name: tableName, Family: nftables.TableFamilyINet}

// base chain names, and the network chain suffix each one jumps to.
const (
	chRaw     = "raw-prerouting"
	chForward = "forward"
	chInput   = "input"
	chNatPre  = "nat-prerouting"
	chNatOut  = "nat-output"
	chNatPost = "nat-postrouting"
)

func baseChain(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
	return &nftables.Chain{Name: name, Table: nftTable, Type: typ, Hooknum: hook, Priority: prio}
}

// baseChains are the hooked chains of the table, created with it.
func baseChains() []*nftables.Chain {
	return []*nftables.Chain{
		baseChain(chRaw, nftables.ChainTypeFilter, nftables.ChainHookPrerouting, nftables.ChainPriorityRaw),
		baseChain(chForward, nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter),
		baseChain(chInput, nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter),
		baseChain(chNatPre, nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest),
		baseChain(chNatOut, nftables.ChainTypeNAT, nftables.ChainHookOutput, nftables.ChainPriorityNATDest),
		baseChain(chNatPost, nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource),
	}
}

func regularChain(name string) *nftables.Chain { return &nftables.Chain{Name: name, Table: nftTable} }

// globalSets are the table's maps and sets.
func globalSets() []*nftables.Set {
	verdictMap := func(name string, key ...nftables.SetDatatype) *nftables.Set {
		return &nftables.Set{Table: nftTable, Name: name, IsMap: true, Concatenation: true,
			KeyType: nftables.MustConcatSetType(key...), DataType: nftables.TypeVerdict}
	}
	return []*nftables.Set{
		verdictMap(setPub4, nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService),
		verdictMap(setPub6, nftables.TypeIP6Addr, nftables.TypeInetProto, nftables.TypeInetService),
		verdictMap(setPubAny, nftables.TypeNFProto, nftables.TypeInetProto, nftables.TypeInetService),
		{Table: nftTable, Name: setBridges, KeyType: nftables.TypeIFName},
	}
}

// nftRule is a rule as data: the chain it goes into and its expressions.
type nftRule struct {
	Chain string
	Exprs []expr.Any
}

// globalRules are the table's own rules, added once with it.
func globalRules() []nftRule {
	lo := netip.MustParsePrefix("127.0.0.0/8")
	return []nftRule{
		// Loopback destinations arrive from outside only in attacks (CVE-2020-8558): never DNAT them.
		{chNatPre, cat(nfprotoIs(true), addrIn(false, lo, true), []expr.Any{verdict(expr.VerdictReturn)})},
		{chNatPre, cat(fibDaddrLocal(), []expr.Any{jump(chainPub)})},
		{chNatOut, cat(fibDaddrLocal(), []expr.Any{jump(chainPub)})},
		{chainPub, pubLookup(setPub4)},
		{chainPub, pubLookup(setPub6)},
		{chainPub, pubLookup(setPubAny)},
	}
}

// netChainName names a network's chain for a base chain ("fwd", "post", ...).
func netChainName(network, part string) string {
	return "n-" + netconf.NetworkHash(network) + "-" + part
}

// netJumps maps each base chain to the network chain it enters.
func netJumps(network string) []nftRule {
	return []nftRule{
		{chRaw, []expr.Any{jump(netChainName(network, "raw"))}},
		{chForward, []expr.Any{jump(netChainName(network, "fwd"))}},
		{chInput, []expr.Any{jump(netChainName(network, "in"))}},
		{chNatPost, []expr.Any{jump(netChainName(network, "post"))}},
	}
}

var (
	loopback4  = netip.MustParsePrefix("127.0.0.0/8")
	multicast4 = netip.MustParsePrefix("224.0.0.0/4")
	multicast6 = netip.MustParsePrefix("ff00::/8")
)

// netRules are the rules inside a network's chains.
func netRules(n *Network) []nftRule {
	b := n.Bridge
	raw, fwd, in, post := netChainName(n.Name, "raw"), netChainName(n.Name, "fwd"),
		netChainName(n.Name, "in"), netChainName(n.Name, "post")
	drop := []expr.Any{verdict(expr.VerdictDrop)}
	masq := []expr.Any{&expr.Masq{}}
	var rs []nftRule
	// route_localnet on the bridge lets containers reach the host's
	// 127.0.0.0/8 services (CVE-2020-8558): drop such packets early.
	rs = append(rs, nftRule{raw, cat(ifnameIs(false, true, b), nfprotoIs(true), addrIn(false, loopback4, true), drop)})
	switch n.mode() {
	case ModeNAT: // from outside only replies and published (DNATed) ports
		rs = append(rs, nftRule{fwd, cat(ifnameIs(true, true, b), ifnameIs(false, false, b),
			ctEstablished(false), ctDNAT(false), drop)})
	case ModeIsolated:
		rs = append(rs,
			nftRule{fwd, cat(ifnameIs(true, true, b), ifnameIs(false, false, b), drop)},
			nftRule{fwd, cat(ifnameIs(false, true, b), ifnameIs(true, false, b), drop)},
			nftRule{in, cat(ifnameIs(false, true, b), drop)})
	}
	if n.Isolate && n.mode() != ModeIsolated { // published ports (DNAT) still cross networks
		rs = append(rs,
			nftRule{fwd, cat(ifnameIs(false, true, b), ifnameIn(true, setBridges), ifnameIs(true, false, b), ctDNAT(false), drop)},
			nftRule{fwd, cat(ifnameIs(true, true, b), ifnameIn(false, setBridges), ifnameIs(false, false, b), ctDNAT(false), drop)})
	}
	if n.mode() == ModeIsolated {
		return rs
	}
	if n.hasFamily(true) { // localhost publishing: the loopback source cannot leave lo
		rs = append(rs, nftRule{post, cat(ifnameIs(true, true, b), nfprotoIs(true), addrIn(true, loopback4, true), masq)})
	}
	for _, p := range n.Subnets {
		v4 := p.Addr().Is4()
		// hairpin: a container reaching a published port of its own bridge
		// must see the reply come back through the host.
		rs = append(rs, nftRule{post, cat(ifnameIs(true, true, b), nfprotoIs(v4), addrIn(true, p, true), ctDNAT(true), masq)})
		if n.masquerades() {
			mc := multicast6
			if v4 {
				mc = multicast4
			}
			rs = append(rs, nftRule{post, cat(nfprotoIs(v4), addrIn(true, p, true), ifnameIs(true, false, b),
				addrIn(false, mc, false), masq)})
		}
	}
	return rs
}

// netChains are the regular chains a network owns.
func netChains(network string) []*nftables.Chain {
	var out []*nftables.Chain
	for _, part := range []string{"raw", "fwd", "in", "post"} {
		out = append(out, regularChain(netChainName(network, part)))
	}
	return out
}

// attChainName names an attachment's chain.
func attChainName(k netconf.Key) string { return "a-" + k.Hash() }

// attRules are the DNAT rules of an attachment's chain.
func attRules(k netconf.Key, ms []mapping) []nftRule {
	ch := attChainName(k)
	var rs []nftRule
	for _, m := range ms {
		e := cat(nfprotoIs(m.is4()), protoPort(m.Proto, m.HostPort))
		if m.HostIP.IsValid() {
			e = append(e, addrIn(false, netip.PrefixFrom(m.HostIP, m.HostIP.BitLen()), true)...)
		}
		rs = append(rs, nftRule{ch, append(e, dnatTo(netip.AddrPortFrom(m.Cont, m.ContPort))...)})
	}
	return rs
}

// attElems are the map elements that enter an attachment's chain, per map.
func attElems(k netconf.Key, ms []mapping) map[string][]nftables.SetElement {
	out := map[string][]nftables.SetElement{}
	seen := map[string]bool{}
	for _, m := range ms {
		set, key := pubKey(m)
		if seen[set+string(key)] {
			continue
		}
		seen[set+string(key)] = true
		out[set] = append(out[set], nftables.SetElement{Key: key, Comment: k.Hash(),
			VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: attChainName(k)}})
	}
	return out
}
