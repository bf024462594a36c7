package dnat

import (
	"errors"
	"os"
	"slices"
	"strings"

	"github.com/coreos/go-iptables/iptables"
	"github.com/google/nftables"

	"github.com/netdrivers/netdrivers/pkg/netns"
)

// fwdGuard keeps traffic flowing on hosts whose iptables FORWARD policy
// is DROP (Docker sets it, firewalld too): a verdict of our nftables
// table cannot overrule their drop, so one jump from FORWARD (or
// DOCKER-USER) enters NETDRIVERS-FORWARD, which accepts what our networks
// intend. Their policies and rules are never changed. The check runs only
// when a network's shared rules are created.
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

// ensure adds n's accept rules to every iptables flavor whose FORWARD
// policy drops, in the host namespace.
// Equivalent to: iptables -I FORWARD -j NETDRIVERS-FORWARD; iptables -A NETDRIVERS-FORWARD -i BR -j ACCEPT ...
func (g *fwdGuard) ensure(n *Network) error {
	var errs []error
	for _, v4 := range families(n) {
		for _, flavor := range g.dropping(v4) {
			errs = append(errs, g.host.Do(func() error {
				ipt, err := openIpt(flavor, v4)
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
			}))
		}
	}
	return errors.Join(errs...)
}

// remove deletes n's accept rules wherever NETDRIVERS-FORWARD exists, and
// the chain with its jump once it is empty.
func (g *fwdGuard) remove(n *Network) error {
	var errs []error
	for _, v4 := range []bool{true, false} {
		for _, flavor := range g.present(v4) {
			errs = append(errs, g.host.Do(func() error {
				ipt, err := openIpt(flavor, v4)
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
	}
	return errors.Join(errs...)
}

// dropping lists the flavors whose FORWARD policy is DROP for a family.
func (g *fwdGuard) dropping(v4 bool) []string {
	var out []string
	if g.legacyLoaded(v4) {
		var drop bool
		g.host.Do(func() error {
			ipt, err := openIpt(FlavorLegacy, v4)
			if err != nil {
				return err
			}
			rules, err := ipt.List("filter", "FORWARD")
			drop = err == nil && len(rules) > 0 && rules[0] == "-P FORWARD DROP"
			return nil
		})
		if drop {
			out = append(out, FlavorLegacy)
		}
	}
	if ch := g.nftForward(v4, "FORWARD"); ch != nil && ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop {
		out = append(out, FlavorNft)
	}
	return out
}

// present lists the flavors holding a NETDRIVERS-FORWARD chain.
func (g *fwdGuard) present(v4 bool) []string {
	var out []string
	if g.legacyLoaded(v4) {
		var ok bool
		g.host.Do(func() error {
			ipt, err := openIpt(FlavorLegacy, v4)
			if err == nil {
				ok, _ = ipt.ChainExists("filter", iptForward)
			}
			return nil
		})
		if ok {
			out = append(out, FlavorLegacy)
		}
	}
	if g.nftForward(v4, iptForward) != nil {
		out = append(out, FlavorNft)
	}
	return out
}

// legacyLoaded reports whether the legacy filter table exists in the host
// namespace: reading /proc costs far less than running iptables-legacy.
func (g *fwdGuard) legacyLoaded(v4 bool) bool {
	name := "ip6_tables_names"
	if v4 {
		name = "ip_tables_names"
	}
	var loaded bool
	g.host.Do(func() error {
		b, err := os.ReadFile("/proc/thread-self/net/" + name)
		loaded = err == nil && slices.Contains(strings.Fields(string(b)), "filter")
		return nil
	})
	return loaded
}

// nftForward gets chain name of iptables-nft's filter table over netlink
// (one GET), or nil when it does not exist.
func (g *fwdGuard) nftForward(v4 bool, name string) *nftables.Chain {
	fam := nftables.TableFamilyIPv6
	if v4 {
		fam = nftables.TableFamilyIPv4
	}
	var opts []nftables.ConnOption
	if !g.host.IsSelf() {
		opts = append(opts, nftables.WithNetNSFd(g.host.Fd()))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil
	}
	ch, err := c.ListChain(&nftables.Table{Name: "filter", Family: fam}, name)
	if err != nil {
		return nil
	}
	return ch
}
