package dnat

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/netdrivers/netdrivers/pkg/netconf"
)

// The iptables layout (rules as data; ipt_linux.go runs them), per family
// (iptables for IPv4, ip6tables for IPv6):
//
//	raw    PREROUTING  -j NETDRIVERS-RAW           127.0.0.0/8 guard per bridge
//	filter FORWARD|DOCKER-USER -j NETDRIVERS-FORWARD
//	       NETDRIVERS-FORWARD: -j NETDRIVERS-DROP first (iptables backend), then accepts
//	       (only where the FORWARD policy drops; shared with the nftables backend)
//	       NETDRIVERS-DROP: per network filtering; NETDRIVERS-ISO-OUT/-IN: per bridge isolation
//	filter INPUT       -j NETDRIVERS-INPUT         isolated networks
//	nat    PREROUTING  -m addrtype --dst-type LOCAL -j NETDRIVERS-DNAT (not 127.0.0.0/8)
//	nat    OUTPUT      -m addrtype --dst-type LOCAL -j NETDRIVERS-DNAT (IPv6: not ::1)
//	       NETDRIVERS-DNAT: per published port -j NDA-<attachment hash>
//	nat    POSTROUTING -j NETDRIVERS-POSTROUTING   masquerade, hairpin, localhost
const (
	iptForward = "NETDRIVERS-FORWARD"
	iptDrop    = "NETDRIVERS-DROP"
	iptIsoOut  = "NETDRIVERS-ISO-OUT"
	iptIsoIn   = "NETDRIVERS-ISO-IN"
	iptInput   = "NETDRIVERS-INPUT"
	iptRaw     = "NETDRIVERS-RAW"
	iptDNAT    = "NETDRIVERS-DNAT"
	iptPost    = "NETDRIVERS-POSTROUTING"
)

// iptRule is one rule as data.
type iptRule struct {
	Table, Chain string
	Spec         []string
}

// iptHook is a jump from a built-in chain into one of ours.
type iptHook struct {
	Table, From, To string
	Match           []string
}

// iptChains are our chains per table, created before any rule.
func iptChains() []iptRule {
	return []iptRule{
		{Table: "raw", Chain: iptRaw}, {Table: "filter", Chain: iptDrop},
		{Table: "filter", Chain: iptIsoOut}, {Table: "filter", Chain: iptIsoIn},
		{Table: "filter", Chain: iptInput}, {Table: "nat", Chain: iptDNAT}, {Table: "nat", Chain: iptPost},
	}
}

// iptHooks are the jumps from built-in chains of the iptables backend
// (the FORWARD one is made by the forward guard).
func iptHooks(v4 bool) []iptHook {
	pre := []string{"-m", "addrtype", "--dst-type", "LOCAL"}
	if v4 { // loopback destinations from outside are never DNATed (CVE-2020-8558)
		pre = append([]string{"!", "-d", "127.0.0.0/8"}, pre...)
	}
	out := []string{"-m", "addrtype", "--dst-type", "LOCAL"}
	if !v4 { // ::1 cannot leave lo (no route_localnet in IPv6): refused, not DNATed into a drop
		out = append([]string{"!", "-d", "::1/128"}, out...)
	}
	return []iptHook{
		{Table: "raw", From: "PREROUTING", To: iptRaw},
		{Table: "filter", From: "INPUT", To: iptInput},
		{Table: "nat", From: "PREROUTING", To: iptDNAT, Match: pre},
		{Table: "nat", From: "OUTPUT", To: iptDNAT, Match: out},
		{Table: "nat", From: "POSTROUTING", To: iptPost},
	}
}

// iptLayout numbers the hooks above; a network record of another layout
// is rebuilt, which replaces the hooks of iptOldHooks.
const iptLayout = 2

// iptOldHooks are hooks of earlier layouts that the current ones replace.
func iptOldHooks(v4 bool) []iptHook {
	if v4 {
		return nil
	}
	return []iptHook{{Table: "nat", From: "OUTPUT", To: iptDNAT, Match: []string{"-m", "addrtype", "--dst-type", "LOCAL"}}}
}

func (h iptHook) spec() []string {
	return append(append([]string{}, h.Match...), "-m", "comment", "--comment", "netdrivers", "-j", h.To)
}

func withComment(text string, spec ...string) []string {
	if len(text) > 255 {
		text = text[:255]
	}
	return append(spec, "-m", "comment", "--comment", text)
}

// subnetsOf returns n's subnets of one family.
func subnetsOf(n *Network, v4 bool) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range n.Subnets {
		if p.Addr().Is4() == v4 {
			out = append(out, p)
		}
	}
	return out
}

// iptNetRules are network n's rules for one family (not the guard's).
func iptNetRules(n *Network, v4 bool) []iptRule {
	b, c := n.Bridge, netTag(n)
	r := func(table, chain string, spec ...string) iptRule {
		return iptRule{Table: table, Chain: chain, Spec: withComment(c, spec...)}
	}
	var rs []iptRule
	if v4 {
		rs = append(rs, r("raw", iptRaw, "-i", b, "-d", "127.0.0.0/8", "-j", "DROP"))
	}
	rs = append(rs,
		r("filter", iptIsoOut, "-o", b, "-m", "conntrack", "!", "--ctstate", "DNAT", "-j", "DROP"),
		r("filter", iptIsoIn, "-i", b, "-m", "conntrack", "!", "--ctstate", "DNAT", "-j", "DROP"))
	switch n.mode() {
	case ModeNAT:
		rs = append(rs, r("filter", iptDrop, "-o", b, "!", "-i", b, "-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED,DNAT", "-j", "DROP"))
	case ModeIsolated:
		return append(rs,
			r("filter", iptDrop, "-o", b, "!", "-i", b, "-j", "DROP"),
			r("filter", iptDrop, "-i", b, "!", "-o", b, "-j", "DROP"),
			r("filter", iptInput, "-i", b, "-j", "DROP"))
	}
	if n.Isolate {
		rs = append(rs,
			r("filter", iptDrop, "-i", b, "!", "-o", b, "-j", iptIsoOut),
			r("filter", iptDrop, "-o", b, "!", "-i", b, "-j", iptIsoIn))
	}
	if v4 {
		rs = append(rs, r("nat", iptPost, "-o", b, "-s", "127.0.0.0/8", "-j", "MASQUERADE"))
	}
	mc := "ff00::/8"
	if v4 {
		mc = "224.0.0.0/4"
	}
	for _, p := range subnetsOf(n, v4) {
		rs = append(rs, r("nat", iptPost, "-o", b, "-s", p.String(), "-m", "conntrack", "--ctstate", "DNAT", "-j", "MASQUERADE"))
		if n.masquerades() {
			rs = append(rs, r("nat", iptPost, "-s", p.String(), "!", "-o", b, "!", "-d", mc, "-j", "MASQUERADE"))
		}
	}
	return rs
}

// guardRules accept what network n's rules intend, for hosts whose
// FORWARD policy drops (Docker, firewalld): an accept elsewhere cannot
// overrule that drop.
func guardRules(n *Network) []iptRule {
	b, c := n.Bridge, netTag(n)
	r := func(spec ...string) iptRule {
		return iptRule{Table: "filter", Chain: iptForward, Spec: withComment(c, spec...)}
	}
	switch n.mode() {
	case ModeIsolated:
		return []iptRule{r("-i", b, "-o", b, "-j", "ACCEPT")}
	case ModeNAT:
		return []iptRule{r("-i", b, "-j", "ACCEPT"),
			r("-o", b, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED,DNAT", "-j", "ACCEPT")}
	}
	return []iptRule{r("-i", b, "-j", "ACCEPT"), r("-o", b, "-j", "ACCEPT")}
}

// iptAttChain names an attachment's nat chain (iptables allows 28 bytes).
func iptAttChain(k netconf.Key) string { return "NDA-" + k.Hash() }

// iptAttRules are an attachment's rules of one family: its chain's DNAT
// rules and the jumps into it from NETDRIVERS-DNAT.
func iptAttRules(k netconf.Key, ms []mapping, v4 bool) (chain, jumps []iptRule) {
	ch := iptAttChain(k)
	for _, m := range ms {
		if m.is4() != v4 {
			continue
		}
		match := []string{"-p", m.Proto, "-m", m.Proto, "--dport", itoa(m.HostPort)}
		if m.HostIP.IsValid() {
			match = append([]string{"-d", m.HostIP.String()}, match...)
		}
		to := netip.AddrPortFrom(m.Cont, m.ContPort).String()
		chain = append(chain, iptRule{Table: "nat", Chain: ch,
			Spec: append(append([]string{}, match...), "-j", "DNAT", "--to-destination", to)})
		jumps = append(jumps, iptRule{Table: "nat", Chain: iptDNAT, Spec: append(withComment(tag(k), match...), "-j", ch)})
	}
	return chain, jumps
}

// iptCheckRules are the rules of one family a CHECK of attachment k
// with mappings ms on network n wants: the network's, k's chain, k's jumps.
func iptCheckRules(n *Network, k netconf.Key, ms []mapping, v4 bool) []iptRule {
	chain, jumps := iptAttRules(k, ms, v4)
	return slices.Concat(iptNetRules(n, v4), chain, jumps)
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }

// splitRule turns a line of `iptables -S CHAIN` ("-A CHAIN args...") back
// into the rule's arguments, honouring the double quotes iptables puts
// around comments with spaces.
func splitRule(line string) []string {
	var (
		out   []string
		cur   strings.Builder
		quote bool
		have  bool
	)
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case ch == '\\' && quote && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case ch == '"':
			quote, have = !quote, true
		case ch == ' ' && !quote:
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(ch)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	if len(out) >= 2 && out[0] == "-A" {
		out = out[2:]
	}
	return out
}
