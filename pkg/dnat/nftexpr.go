package dnat

import (
	"encoding/binary"
	"net/netip"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Small builders of nftables expressions; each returns what `nft` would
// generate for the match named in its comment. Register 1 (the 32-bit
// registers 8-11) holds the first field of a concatenation, 9.. the rest.

const (
	ipsDstNAT = 0x20 // IPS_DST_NAT: the connection was DNATed
	rtnLocal  = 2    // RTN_LOCAL: fib address type local
)

func nfprotoIs(v4 bool) []expr.Any { // meta nfproto ipv4|ipv6
	p := byte(unix.NFPROTO_IPV6)
	if v4 {
		p = unix.NFPROTO_IPV4
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

func ifname(name string) []byte {
	b := make([]byte, 16)
	copy(b, name)
	return b
}

// iifname / oifname (==|!=) name
func ifnameIs(out bool, eq bool, name string) []expr.Any {
	key, op := expr.MetaKeyIIFNAME, expr.CmpOpEq
	if out {
		key = expr.MetaKeyOIFNAME
	}
	if !eq {
		op = expr.CmpOpNeq
	}
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: ifname(name)},
	}
}

// iifname|oifname @set
func ifnameIn(out bool, set string) []expr.Any {
	key := expr.MetaKeyIIFNAME
	if out {
		key = expr.MetaKeyOIFNAME
	}
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: set},
	}
}

func addrOffset(v4, src bool) (off, n uint32) {
	switch {
	case v4 && src:
		return 12, 4
	case v4:
		return 16, 4
	case src:
		return 8, 16
	}
	return 24, 16
}

// ip|ip6 saddr|daddr (==|!=) prefix; the caller adds the nfproto match.
func addrIn(src bool, p netip.Prefix, eq bool) []expr.Any {
	v4 := p.Addr().Is4()
	off, n := addrOffset(v4, src)
	op := expr.CmpOpEq
	if !eq {
		op = expr.CmpOpNeq
	}
	load := &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n}
	if p.Bits() == p.Addr().BitLen() {
		return []expr.Any{load, &expr.Cmp{Op: op, Register: 1, Data: p.Addr().AsSlice()}}
	}
	mask := make([]byte, n)
	for i := 0; i < p.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		load,
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)},
		&expr.Cmp{Op: op, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}

// meta l4proto P th dport HP
func protoPort(proto string, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{protoNum(proto)}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

func protoNum(proto string) byte {
	switch proto {
	case "udp":
		return unix.IPPROTO_UDP
	case "sctp":
		return unix.IPPROTO_SCTP
	}
	return unix.IPPROTO_TCP
}

// ct state established,related (eq) or ct state != established,related.
func ctEstablished(eq bool) []expr.Any {
	return ctBits(expr.CtKeySTATE, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED, eq)
}

// ct status dnat (eq) or ct status != dnat.
func ctDNAT(eq bool) []expr.Any { return ctBits(expr.CtKeySTATUS, ipsDstNAT, eq) }

func ctBits(key expr.CtKey, bits uint32, set bool) []expr.Any {
	op := expr.CmpOpNeq
	if !set {
		op = expr.CmpOpEq
	}
	return []expr.Any{
		&expr.Ct{Register: 1, Key: key},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
		&expr.Cmp{Op: op, Register: 1, Data: make([]byte, 4)},
	}
}

// fib daddr type local
func fibDaddrLocal() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(rtnLocal)},
	}
}

func verdict(k expr.VerdictKind) expr.Any { return &expr.Verdict{Kind: k} }

func jump(chain string) expr.Any { return &expr.Verdict{Kind: expr.VerdictJump, Chain: chain} }

// dnat ip|ip6 to addr:port
func dnatTo(to netip.AddrPort) []expr.Any {
	fam := uint32(unix.NFPROTO_IPV6)
	if to.Addr().Is4() {
		fam = unix.NFPROTO_IPV4
	}
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: to.Addr().AsSlice()},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(to.Port())},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: fam, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	}
}

// Keys of the published-port maps: fields padded to 4 bytes, as the
// kernel lays out concatenations in 32-bit registers.

// pubKey is the key of a mapping in pub4/pub6 (address . proto . port)
// or, for every local address, in pubany (nfproto . proto . port).
func pubKey(m mapping) (set string, key []byte) {
	var head []byte
	switch {
	case m.HostIP.IsValid():
		set, head = setPub6, m.HostIP.AsSlice()
		if m.HostIP.Is4() {
			set = setPub4
		}
	case m.is4():
		set, head = setPubAny, []byte{unix.NFPROTO_IPV4, 0, 0, 0}
	default:
		set, head = setPubAny, []byte{unix.NFPROTO_IPV6, 0, 0, 0}
	}
	key = append(head, protoNum(m.Proto), 0, 0, 0)
	key = binary.BigEndian.AppendUint16(key, m.HostPort)
	return set, append(key, 0, 0)
}

// published-map lookups: the concatenation is loaded into consecutive
// registers and looked up as a verdict map.
func pubLookup(set string) []expr.Any {
	var e []expr.Any
	next := uint32(9) // register after a 4-byte head
	switch set {
	case setPub4:
		e = append(nfprotoIs(true), &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4})
	case setPub6:
		e = append(nfprotoIs(false), &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16})
		next = 12
	default:
		e = []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}}
	}
	return append(e,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: next},
		&expr.Payload{DestRegister: next + 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: set, DestRegister: 0, IsDestRegSet: true},
	)
}

func cat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
