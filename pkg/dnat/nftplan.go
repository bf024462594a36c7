package dnat

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/netconf"
)

// The nftables layout (rules as data; nft_linux.go sends them):
//
//	table inet netdrivers
//	  chain raw-prerouting  (filter prerouting -300)  jump n-<net>-raw per network
//	  chain forward         (filter forward 0)        jump n-<net>-fwd per network
//	  chain input           (filter input 0)          jump n-<net>-in per network
//	  chain nat-prerouting  (nat prerouting -100)     ip daddr 127.0.0.0/8 return; fib daddr type local jump published
//	  chain nat-output      (nat output -100)         ip6 daddr ::1 return; fib daddr type local jump published
//	  chain nat-postrouting (nat postrouting 100)     jump n-<net>-post per network
//	  chain published       dnat ip to ip daddr . meta l4proto . th dport map @dnat4
//	                        (then @dnat6, and meta l4proto . th dport map @dnat4-any, @dnat6-any)
//	  map dnat4/dnat6       host address . proto . port : container address . port
//	  map dnat4-any/-any    proto . port : container address . port (every local address of the family)
//	  set attachments       one element per attachment that publishes ports
//	  set bridges           every netdrivers bridge (for Isolate)
//	  set layout-3          empty: the base rules are of this layout (older tables are rewritten)
//
// Network chains hold only drops (filter) or NAT statements, so their
// order in the base chains does not matter. An attachment is nothing but
// map elements: adding one adds no rule and no jump, so the kernel never
// re-validates the table's chain graph for it (what made per-attachment
// chains entered by verdict maps O(attachments)), and Add, Del and Check
// are O(1) in their number. Del does not delete the elements either: it
// gives them a timeout of one tick. A batch that deletes anything makes
// the next close of a netfilter netlink socket in the namespace (or the
// process's exit) wait for the kernel to free it after an RCU grace
// period; an update frees nothing, and the kernel's set GC reaps the
// expired elements later in the background. Maps carry `flags timeout`
// for that; elements without a timeout never expire.
const (
	tableName  = "netdrivers"
	chainPub   = "published"
	mapAddr4   = "dnat4"
	mapAddr6   = "dnat6"
	mapAny4    = "dnat4-any"
	mapAny6    = "dnat6-any"
	setAtts    = "attachments"
	setBridges = "bridges"
	setLayout  = "layout-3"
)

// pubMaps are the published-port maps, in lookup order: a specific host
// address wins over every address of the family.
var pubMaps = []string{mapAddr4, mapAddr6, mapAny4, mapAny6}

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

// pubMap describes one published-port map (a fresh value: AddSet
// assigns it a batch ID).
func pubMap(name string) *nftables.Set {
	addr := nftables.TypeIP6Addr
	if mapIs4(name) {
		addr = nftables.TypeIPAddr
	}
	key := []nftables.SetDatatype{nftables.TypeInetProto, nftables.TypeInetService}
	if name == mapAddr4 || name == mapAddr6 {
		key = append([]nftables.SetDatatype{addr}, key...)
	}
	return &nftables.Set{Table: nftTable, Name: name, IsMap: true, HasTimeout: true, Concatenation: true,
		KeyType: nftables.MustConcatSetType(key...), DataType: nftables.MustConcatSetType(addr, nftables.TypeInetService)}
}

func mapIs4(name string) bool { return name == mapAddr4 || name == mapAny4 }

// attSet is the set of attachments that publish ports: how a Del that
// lost Add's record knows in O(1) whether there is anything to look for.
func attSet() *nftables.Set {
	return &nftables.Set{Table: nftTable, Name: setAtts, KeyType: nftables.TypeIFName, HasTimeout: true,
		KeyByteOrder: binaryutil.NativeEndian} // as nft marks strings: `nft list` prints the names
}

// layoutSet marks a table whose base rules are of this layout: a table
// without it (an older plugin's) has its base rules rewritten. Its name
// changes with the base rules.
func layoutSet() *nftables.Set {
	return &nftables.Set{Table: nftTable, Name: setLayout, KeyType: nftables.TypeInteger,
		Comment: "netdrivers layout 3: nat-output leaves ::1 alone"}
}

func bridgeSet() *nftables.Set {
	return &nftables.Set{Table: nftTable, Name: setBridges, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian}
}

// globalSets are the table's maps and sets.
func globalSets() []*nftables.Set {
	var out []*nftables.Set
	for _, m := range pubMaps {
		out = append(out, pubMap(m))
	}
	return append(out, attSet(), bridgeSet(), layoutSet())
}

// nftRule is a rule as data: the chain it goes into and its expressions.
type nftRule struct {
	Chain string
	Exprs []expr.Any
}

// globalRules are the table's own rules, added once with it.
func globalRules() []nftRule {
	lo := netip.MustParsePrefix("127.0.0.0/8")
	lo6 := netip.MustParsePrefix("::1/128")
	return []nftRule{
		// Loopback destinations arrive from outside only in attacks (CVE-2020-8558): never DNAT them.
		{chNatPre, cat(nfprotoIs(true), addrIn(false, lo, true), []expr.Any{verdict(expr.VerdictReturn)})},
		{chNatPre, cat(fibDaddrLocal(), []expr.Any{jump(chainPub)})},
		// ::1 cannot leave lo (no route_localnet in IPv6): DNATed, it would be
		// dropped on the bridge and the dial would hang instead of being refused.
		{chNatOut, cat(nfprotoIs(false), addrIn(false, lo6, true), []expr.Any{verdict(expr.VerdictReturn)})},
		{chNatOut, cat(fibDaddrLocal(), []expr.Any{jump(chainPub)})},
		{chainPub, dnatMap(mapAddr4)},
		{chainPub, dnatMap(mapAddr6)},
		{chainPub, dnatMap(mapAny4)},
		{chainPub, dnatMap(mapAny6)},
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

// pubElem is one element of a published-port map: what Add adds, Del
// retires and Check gets.
type pubElem struct {
	Map   string
	Key   []byte // (host address .) proto . port, fields padded to 32 bits
	Val   []byte // container address . port
	Proto byte
	Port  uint16 // host port
}

// String names the published port, as messages show it.
func (e pubElem) String() string {
	proto := map[byte]string{unix.IPPROTO_TCP: "tcp", unix.IPPROTO_UDP: "udp", unix.IPPROTO_SCTP: "sctp"}[e.Proto]
	host := "every IPv4 address"
	switch e.Map {
	case mapAddr4, mapAddr6:
		a, _ := netip.AddrFromSlice(e.Key[:len(e.Key)-8])
		host = a.String()
	case mapAny6:
		host = "every IPv6 address"
	}
	return fmt.Sprintf("%s port %d of %s", proto, e.Port, host)
}

// attElems are the map elements of an attachment's mappings. A host port
// given twice is published once (the first mapping wins).
func attElems(ms []mapping) []pubElem {
	var out []pubElem
	for _, m := range ms {
		e := mapElem(m)
		if !slices.ContainsFunc(out, func(o pubElem) bool { return o.Map == e.Map && bytes.Equal(o.Key, e.Key) }) {
			out = append(out, e)
		}
	}
	return out
}

// attMarker is an attachment's element in the attachments set: its hash,
// cut to what an ifname holds (the comment, its tag, has all of it).
func attMarker(k netconf.Key) pubElem {
	return pubElem{Map: setAtts, Key: ifname(k.Hash()[:15])}
}

// withMarker is elems and the attachment's marker: what Add adds and Del
// retires, together.
func withMarker(k netconf.Key, elems []pubElem) []pubElem {
	return append(slices.Clone(elems), attMarker(k))
}

// maxComment keeps comments within the kernel's 256-byte user data.
const maxComment = 200

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
