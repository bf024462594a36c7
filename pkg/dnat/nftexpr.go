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

// Keys and values of the published-port maps: fields padded to 4 bytes,
// as the kernel lays out concatenations in 32-bit registers.

// mapElem is a mapping's element: in dnat4/dnat6 (host address . proto .
// port) or, for every local address, in dnat4-any/dnat6-any (proto . port),
// with the container address . port as the value.
func mapElem(m mapping) pubElem {
	e := pubElem{Proto: protoNum(m.Proto), Port: m.HostPort}
	switch {
	case m.HostIP.IsValid() && m.HostIP.Is4():
		e.Map, e.Key = mapAddr4, m.HostIP.AsSlice()
	case m.HostIP.IsValid():
		e.Map, e.Key = mapAddr6, m.HostIP.AsSlice()
	case m.is4():
		e.Map = mapAny4
	default:
		e.Map = mapAny6
	}
	e.Key = append(e.Key, e.Proto, 0, 0, 0)
	e.Key = append(binary.BigEndian.AppendUint16(e.Key, m.HostPort), 0, 0)
	e.Val = append(m.Cont.AsSlice(), 0, 0, 0, 0)
	binary.BigEndian.PutUint16(e.Val[len(e.Val)-4:], m.ContPort)
	return e
}

// elemFromKey rebuilds an element found in map name from its key and
// value (proto and port are the key's last two fields).
func elemFromKey(name string, key, val []byte) (pubElem, bool) {
	if len(key) < 8 {
		return pubElem{}, false
	}
	return pubElem{Map: name, Key: key, Val: val, Proto: key[len(key)-8],
		Port: binary.BigEndian.Uint16(key[len(key)-4:])}, true
}

// dnatMap is the published chain's rule for map name:
// meta nfproto F dnat F to [F daddr .] meta l4proto . th dport map @name
// The value lands in registers 1 (address) and 9 or 2 (port, after a
// 4- or 16-byte address), as nft lays it out.
func dnatMap(name string) []expr.Any {
	v4 := mapIs4(name)
	e := nfprotoIs(v4)
	proto := uint32(1) // the concatenation's first 32-bit register
	switch name {
	case mapAddr4:
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4})
		proto = 9
	case mapAddr6:
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16})
		proto = 12
	}
	port := uint32(9)
	if proto != 1 {
		port = proto + 1
	}
	fam, portReg := uint32(unix.NFPROTO_IPV6), uint32(2)
	if v4 {
		fam, portReg = unix.NFPROTO_IPV4, 9
	}
	return append(e,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: proto},
		&expr.Payload{DestRegister: port, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: name, DestRegister: 1, IsDestRegSet: true},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: fam, RegAddrMin: 1, RegProtoMin: portReg},
	)
}

func cat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
