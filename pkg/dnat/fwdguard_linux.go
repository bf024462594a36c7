package dnat

import (
	"errors"
	"slices"

	"github.com/coreos/go-iptables/iptables"

	"github.com/netdrivers/netdrivers/pkg/netns"
)

// fwdGuard keeps traffic flowing on hosts whose iptables FORWARD policy
// is DROP (Docker sets it, firewalld too): a verdict of our nftables
// table cannot overrule their drop, so one jump from FORWARD (or
// DOCKER-USER) enters NETDRIVERS-FORWARD, which accepts what our networks
// intend. Their policies and rules are never changed. The policies are
// read on every ADD (states), and the guard added where one drops.
type fwdGuard struct{ host *netns.Handle }

func newFwdGuard(host *netns.Handle) *fwdGuard { return &fwdGuard{host: host} }

func forwardHookSpec() []string {
	return []string{"-m", "comment", "--comment", "netdrivers", "-j", iptForward}
}

// forwardFrom is the chain our FORWARD jump goes into: DOCKER-USER, the
// chain Docker reserves for users, when it exists.
func forwardFrom(ipt *iptables.IPTables) string {
	if ok, err := ipt.ChainExists("filter", "DOCKER-USER"); err == nil && ok {
		return "DOCKER-USER"
	}
	return "FORWARD"
}

// ensureForwardChain creates NETDRIVERS-FORWARD and the jump into it.
func ensureForwardChain(ipt *iptables.IPTables) error {
	if err := ensureChain(ipt, "filter", iptForward); err != nil {
		return err
	}
	return ensureHook(ipt, "filter", forwardFrom(ipt), forwardHookSpec())
}

// removeForwardChainIfEmpty deletes NETDRIVERS-FORWARD and its jump once
// no rule is left in it.
func removeForwardChainIfEmpty(ipt *iptables.IPTables) error {
	return deleteChainIfEmpty(ipt, "filter", iptForward,
		map[string][]string{"FORWARD": forwardHookSpec(), "DOCKER-USER": forwardHookSpec()})
}

// families lists the address families (v4 true) a network has.
func families(n *Network) []bool {
	var out []bool
	if n.hasFamily(true) {
		out = append(out, true)
	}
	if n.hasFamily(false) {
		out = append(out, false)
	}
	return out
}

// fwdState is what one iptables flavor's filter table says for a family.
type fwdState struct {
	Flavor string // FlavorLegacy or FlavorNft
	V4     bool
	Drop   bool // the FORWARD policy is DROP
	Chain  bool // NETDRIVERS-FORWARD exists
}

// id names the flavor and family in the network record ("nft4", "legacy6").
func (s fwdState) id() string {
	if s.V4 {
		return s.Flavor + "4"
	}
	return s.Flavor + "6"
}

// states reads, in the host namespace, the FORWARD policy and our chain
// of both iptables flavors for n's families (both when n is nil), without
// running iptables: GETs over c (a socket of its own when nil) for
// iptables-nft, sent in one round trip after the caller's own requests
// pre; getsockopt for iptables-legacy. Cheap enough for every ADD, so a
// Docker or firewalld started after a network was created is noticed.
func (g *fwdGuard) states(c *nftConn, n *Network, pre ...*nftGet) ([]fwdState, error) {
	fams := []bool{true, false}
	if n != nil {
		fams = families(n)
	}
	if c == nil {
		var err error
		if c, err = openNft(g.host); err != nil {
			return nil, err
		}
		defer c.close()
	}
	gets := pre
	for _, v4 := range fams {
		gets = append(gets, getChain(ipFamily(v4), "filter", "FORWARD"), getChain(ipFamily(v4), "filter", iptForward))
	}
	if err := c.get(gets...); err != nil {
		return nil, err
	}
	var out []fwdState
	var errs []error
	for i, v4 := range fams {
		fwd, ours := gets[len(pre)+2*i], gets[len(pre)+2*i+1]
		_, drop, err := fwd.chainPolicy()
		chain, _, err2 := ours.chainPolicy()
		errs = append(errs, err, err2)
		out = append(out, fwdState{Flavor: FlavorNft, V4: v4, Drop: drop, Chain: chain})
	}
	g.host.Do(func() error {
		for _, v4 := range fams {
			// A legacy table that cannot be read counts as not dropping, as
			// before this check ran on every ADD: it must not stop one.
			if exists, drop, chain, err := legacyFilter(v4); exists && err == nil {
				out = append(out, fwdState{Flavor: FlavorLegacy, V4: v4, Drop: drop, Chain: chain})
			}
		}
		return nil
	})
	return out, errors.Join(errs...)
}

// unguarded lists the states that drop and lack our chain or were not
// guarded for the network yet (guarded holds the ids its record keeps).
func unguarded(states []fwdState, guarded []string) []fwdState {
	var out []fwdState
	for _, s := range states {
		if s.Drop && (!s.Chain || !slices.Contains(guarded, s.id())) {
			out = append(out, s)
		}
	}
	return out
}

// ensure adds n's accept rules to every flavor and family whose FORWARD
// policy drops, in the host namespace, and returns their ids.
// Equivalent to: iptables -I FORWARD -j NETDRIVERS-FORWARD; iptables -A NETDRIVERS-FORWARD -i BR -j ACCEPT ...
func (g *fwdGuard) ensure(n *Network, states []fwdState) ([]string, error) {
	var ids []string
	var errs []error
	for _, s := range states {
		if !s.Drop {
			continue
		}
		err := g.host.Do(func() error {
			ipt, err := openIpt(s.Flavor, s.V4)
			if err != nil {
				return err
			}
			if err := ensureForwardChain(ipt); err != nil {
				return err
			}
			for _, r := range guardRules(n) {
				if err := appendUnique(ipt, r); err != nil {
					return err
				}
			}
			return nil
		})
		if errs = append(errs, err); err == nil {
			ids = append(ids, s.id())
		}
	}
	return ids, errors.Join(errs...)
}

// remove deletes n's accept rules wherever NETDRIVERS-FORWARD exists, and
// the chain with its jump once it is empty.
func (g *fwdGuard) remove(n *Network) error {
	states, err := g.states(nil, nil)
	errs := []error{err}
	for _, s := range states {
		if !s.Chain {
			continue
		}
		errs = append(errs, g.host.Do(func() error {
			ipt, err := openIpt(s.Flavor, s.V4)
			if err != nil {
				return err
			}
			var errs []error
			for _, r := range guardRules(n) {
				errs = append(errs, deleteRule(ipt, r))
			}
			return errors.Join(append(errs, removeForwardChainIfEmpty(ipt))...)
		}))
	}
	return errors.Join(errs...)
}
