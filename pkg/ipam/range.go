package ipam

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
)

// Range is one pool of a range set: addresses Start..End (inclusive) of
// Subnet, handed out round-robin, Gateway never.
type Range struct {
	Subnet  netip.Prefix
	Start   netip.Addr
	End     netip.Addr
	Gateway netip.Addr
}

// RangeSet is a list of disjoint ranges of one family; an attachment gets
// one address per set.
type RangeSet []Range

// Contains reports whether ip lies in Start..End of r.
func (r *Range) Contains(ip netip.Addr) bool {
	return ip.Is4() == r.Start.Is4() && r.Start.Compare(ip) <= 0 && ip.Compare(r.End) <= 0
}

func (r *Range) overlaps(o *Range) bool {
	return r.Contains(o.Start) || r.Contains(o.End) || o.Contains(r.Start) || o.Contains(r.End)
}

func (r *Range) String() string { return r.Start.String() + "-" + r.End.String() }

// RangeFor returns the range of s holding ip, or nil.
func (s RangeSet) RangeFor(ip netip.Addr) *Range {
	for i := range s {
		if s[i].Contains(ip) {
			return &s[i]
		}
	}
	return nil
}

// Contains reports whether any range of s holds ip.
func (s RangeSet) Contains(ip netip.Addr) bool { return s.RangeFor(ip) != nil }

func (s RangeSet) overlaps(o RangeSet) bool {
	for i := range s {
		for j := range o {
			if s[i].overlaps(&o[j]) {
				return true
			}
		}
	}
	return false
}

func (s RangeSet) String() string {
	parts := make([]string, len(s))
	for i := range s {
		parts[i] = s[i].String()
	}
	return strings.Join(parts, ",")
}

// rangeJSON is one range as configured; strings, so that every bad value
// gets a message naming it.
type rangeJSON struct {
	Subnet     string `json:"subnet"`
	RangeStart string `json:"rangeStart,omitempty"`
	RangeEnd   string `json:"rangeEnd,omitempty"`
	Gateway    string `json:"gateway,omitempty"`
}

// canonicalize validates a configured range and fills in the defaults of
// the reference host-local: gateway and rangeStart network+1, rangeEnd the
// last address (IPv4: before broadcast). field names it in errors.
func (rj *rangeJSON) canonicalize(field string) (Range, error) {
	var r Range
	if rj.Subnet == "" {
		return r, cnierr.Errorf(cnierr.InvalidConfig, "%s.subnet: missing, expected a CIDR such as 10.88.0.0/16", field)
	}
	p, err := netip.ParsePrefix(rj.Subnet)
	if err != nil || p.Addr().Zone() != "" {
		return r, cnierr.Errorf(cnierr.InvalidConfig, "%s.subnet: %q is not a CIDR, expected e.g. 10.88.0.0/16", field, rj.Subnet)
	}
	if p.Addr().Is4In6() {
		return r, cnierr.Errorf(cnierr.InvalidConfig, "%s.subnet: %q is an IPv4-mapped IPv6 prefix, write it as IPv4", field, rj.Subnet)
	}
	if p.Bits() > p.Addr().BitLen()-2 {
		return r, cnierr.Errorf(cnierr.InvalidConfig, "%s.subnet: %q is too small to allocate from, expected at most /%d", field, rj.Subnet, p.Addr().BitLen()-2)
	}
	if p.Masked() != p {
		return r, cnierr.Errorf(cnierr.InvalidConfig, "%s.subnet: %q has host bits set, expected the network address %s", field, rj.Subnet, p.Masked())
	}
	r.Subnet = p
	first := p.Addr().Next()
	if r.Gateway, err = optAddr(field+".gateway", rj.Gateway, p, first); err != nil {
		return r, err
	}
	if r.Start, err = optAddr(field+".rangeStart", rj.RangeStart, p, first); err != nil {
		return r, err
	}
	if r.End, err = optAddr(field+".rangeEnd", rj.RangeEnd, p, lastAddr(p)); err != nil {
		return r, err
	}
	if r.Start.Compare(r.End) > 0 {
		return r, cnierr.Errorf(cnierr.InvalidConfig, "%s: rangeStart %s is after rangeEnd %s", field, r.Start, r.End)
	}
	return r, nil
}

// optAddr parses an optional address that must lie in p.
func optAddr(field, s string, p netip.Prefix, def netip.Addr) (netip.Addr, error) {
	if s == "" {
		return def, nil
	}
	ip, err := parseAddr(s)
	if err != nil {
		return ip, cnierr.Errorf(cnierr.InvalidConfig, "%s: %q is not an IP address", field, s)
	}
	if !p.Contains(ip) {
		return ip, cnierr.Errorf(cnierr.InvalidConfig, "%s: %s is not in subnet %s", field, ip, p)
	}
	return ip, nil
}

// parseAddr accepts an IPv4 or IPv6 address without zone; IPv4-mapped
// IPv6 becomes IPv4, as the reference's canonicalizeIP does.
func parseAddr(s string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return ip, err
	}
	if ip.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("address %q has a zone", s)
	}
	return ip.Unmap(), nil
}

// lastAddr is p's last address, or the one before broadcast for IPv4.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := range b {
		bit := i * 8
		switch {
		case bit >= p.Bits():
			b[i] = 0xff
		case bit+8 > p.Bits():
			b[i] |= 0xff >> (p.Bits() - bit)
		}
	}
	last, _ := netip.AddrFromSlice(b)
	if last.Is4() {
		last = last.Prev()
	}
	return last
}

// canonicalizeSet validates one range set: not empty, one family, no
// overlapping ranges.
func canonicalizeSet(field string, in []rangeJSON) (RangeSet, error) {
	if len(in) == 0 {
		return nil, cnierr.Errorf(cnierr.InvalidConfig, "%s: empty range set, expected at least one range", field)
	}
	set := make(RangeSet, len(in))
	for i := range in {
		r, err := in[i].canonicalize(fmt.Sprintf("%s[%d]", field, i))
		if err != nil {
			return nil, err
		}
		if i > 0 && r.Start.Is4() != set[0].Start.Is4() {
			return nil, cnierr.Errorf(cnierr.InvalidConfig, "%s: mixes IPv4 and IPv6 ranges (%s, %s), expected one family per set", field, set[0].Subnet, r.Subnet)
		}
		for j := 0; j < i; j++ {
			if set[j].overlaps(&r) {
				return nil, cnierr.Errorf(cnierr.InvalidConfig, "%s: ranges %s and %s overlap", field, set[j].String(), r.String())
			}
		}
		set[i] = r
	}
	return set, nil
}

// iter walks a range set round-robin as the reference host-local does:
// from the address after the last reserved one (or the first range's
// start), across ranges, skipping gateways, once around.
type iter struct {
	set   RangeSet
	idx   int
	cur   netip.Addr // invalid before the first call
	start netip.Addr // where the walk began; invalid until known
}

func newIter(set RangeSet, last netip.Addr) *iter {
	it := &iter{set: set}
	if last.IsValid() {
		for i := range set {
			if set[i].Contains(last) {
				it.idx, it.cur = i, last
				return it
			}
		}
	}
	it.start = set[0].Start
	return it
}

// next returns the next candidate and its range, or false when the walk
// is back where it began.
func (it *iter) next() (netip.Addr, *Range, bool) {
	for {
		r := &it.set[it.idx]
		if !it.cur.IsValid() {
			it.cur, it.start = r.Start, r.Start
			if it.cur != r.Gateway {
				return it.cur, r, true
			}
			continue
		}
		if it.cur == r.End {
			it.idx = (it.idx + 1) % len(it.set)
			r = &it.set[it.idx]
			it.cur = r.Start
		} else {
			it.cur = it.cur.Next()
		}
		if !it.start.IsValid() {
			it.start = it.cur
		} else if it.cur == it.start {
			return netip.Addr{}, nil, false
		}
		if it.cur != r.Gateway {
			return it.cur, r, true
		}
	}
}
