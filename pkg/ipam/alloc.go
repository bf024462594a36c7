package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
)

// pool is the address store as the allocator sees it (the disk store, or
// a map in unit tests).
type pool interface {
	// reserve creates ip's entry for o unless one exists (false then).
	reserve(ip netip.Addr, o owner) (bool, error)
	remove(ip netip.Addr) error
	readEntry(ip netip.Addr) (owner, error)
	lastReserved(set int) netip.Addr
	setLastReserved(set int, ip netip.Addr) error
}

// lease is one address handed out from range set Set.
type lease struct {
	IP    netip.Addr
	Range *Range
	Set   int
}

// allocateIn reserves one address per range set for o, as the reference
// host-local does: a requested address for the set that contains it,
// otherwise the next free one round-robin from last_reserved_ip.<set>.
// held are o's addresses before the call (a second ADD without DEL is
// refused). On error, what this call reserved is removed again.
func allocateIn(p pool, sets []RangeSet, o owner, requested, held []netip.Addr) (_ []lease, err error) {
	var out []lease
	defer func() {
		if err != nil {
			for _, l := range out {
				err = errors.Join(err, p.remove(l.IP))
			}
			out = nil
		}
	}()
	left := append([]netip.Addr(nil), requested...)
	for i, set := range sets {
		var l lease
		if j := indexIn(left, set); j >= 0 {
			l, err = reserveRequested(p, set, i, o, left[j])
			left = append(left[:j], left[j+1:]...)
		} else {
			l, err = reserveNext(p, set, i, o, held)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	if len(left) > 0 {
		return nil, leftoverErr(left, sets, out)
	}
	return out, nil
}

// leftoverErr explains requested addresses that no set took: a set gives
// one address and took another requested one, or no set holds them.
func leftoverErr(left []netip.Addr, sets []RangeSet, out []lease) error {
	var errs []error
	var none []netip.Addr
	for _, ip := range left {
		if k := setOf(ip, sets); k >= 0 {
			errs = append(errs, cnierr.Errorf(cnierr.InvalidConfig,
				"requested IP %s is in range set %d (%s), which gives one address and already took requested IP %s",
				ip, k, sets[k], out[k].IP))
		} else {
			none = append(none, ip)
		}
	}
	if len(none) > 0 {
		errs = append(errs, cnierr.Errorf(cnierr.InvalidConfig, "requested IPs %s are in none of the ranges %s", joinAddrs(none), joinSets(sets)))
	}
	return errors.Join(errs...)
}

// setOf is the index of the set containing ip, or -1.
func setOf(ip netip.Addr, sets []RangeSet) int {
	for k, set := range sets {
		if set.Contains(ip) {
			return k
		}
	}
	return -1
}

func indexIn(ips []netip.Addr, set RangeSet) int {
	for j, ip := range ips {
		if set.Contains(ip) {
			return j
		}
	}
	return -1
}

func reserveRequested(p pool, set RangeSet, i int, o owner, ip netip.Addr) (lease, error) {
	r := set.RangeFor(ip)
	if ip == r.Gateway {
		return lease{}, cnierr.Errorf(cnierr.InvalidConfig, "requested IP %s is the gateway of %s", ip, r.Subnet)
	}
	ok, err := p.reserve(ip, o)
	if err != nil {
		return lease{}, err
	}
	if !ok {
		who := "an unreadable entry"
		if h, err := p.readEntry(ip); err == nil {
			who = h.String()
		}
		return lease{}, fmt.Errorf("requested IP %s in range set %d (%s) is held by %s: %w", ip, i, set, who, ErrInUse)
	}
	if err := p.setLastReserved(i, ip); err != nil {
		return lease{}, errors.Join(err, p.remove(ip))
	}
	return lease{IP: ip, Range: r, Set: i}, nil
}

func reserveNext(p pool, set RangeSet, i int, o owner, held []netip.Addr) (lease, error) {
	for _, ip := range held {
		if set.Contains(ip) {
			return lease{}, fmt.Errorf("%s already holds %s from range set %d (%s), a second ADD without DEL: %w", o, ip, i, set, ErrDuplicate)
		}
	}
	it := newIter(set, p.lastReserved(i))
	for {
		ip, r, more := it.next()
		if !more {
			return lease{}, fmt.Errorf("no free address in range set %d (%s): %w", i, set, ErrExhausted)
		}
		ok, err := p.reserve(ip, o)
		if err != nil {
			return lease{}, err
		}
		if ok {
			if err := p.setLastReserved(i, ip); err != nil {
				return lease{}, errors.Join(err, p.remove(ip))
			}
			return lease{IP: ip, Range: r, Set: i}, nil
		}
	}
}

func joinAddrs(ips []netip.Addr) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, ", ")
}

func joinSets(sets []RangeSet) string {
	s := make([]string, len(sets))
	for i, set := range sets {
		s[i] = set.String()
	}
	return strings.Join(s, "; ")
}
