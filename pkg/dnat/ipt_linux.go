package dnat

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/coreos/go-iptables/iptables"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/state"
	"github.com/netdrivers/netdrivers/pkg/undo"
)

// IptablesOptions picks the iptables binaries of the iptables backend.
type IptablesOptions struct {
	Flavor string // FlavorDefault (the host's `iptables`), FlavorLegacy or FlavorNft
}

// iptBackend runs iptables/ip6tables in the host namespace: every call
// rewrites a table, so it is correct, not O(1).
type iptBackend struct {
	host   *netns.Handle
	rec    records
	guard  *fwdGuard
	flavor string

	mu   sync.Mutex
	ipts map[bool]*iptables.IPTables // by family (v4): opening one execs `iptables --version`
}

// NewIptables returns the iptables backend with explicit options.
func NewIptables(host *netns.Handle, store *state.Store, o IptablesOptions) (Backend, error) {
	return newIpt(host, store, o)
}

func newIpt(host *netns.Handle, store *state.Store, o IptablesOptions) (*iptBackend, error) {
	switch o.Flavor {
	case FlavorDefault, FlavorLegacy, FlavorNft:
	default:
		return nil, fmt.Errorf("%w: iptables flavor %q is not one of legacy|nft", ErrInvalid, o.Flavor)
	}
	name := BackendIptables
	if o.Flavor != "" {
		name += "-" + o.Flavor
	}
	return &iptBackend{host: host, rec: records{store: store, backend: name, layout: iptLayout}, guard: newFwdGuard(host), flavor: o.Flavor}, nil
}

// do runs fn with runners for the families asked (v4 true), inside the
// host namespace.
func (b *iptBackend) do(fams []bool, fn func(ipt *iptables.IPTables, v4 bool) error) error {
	var errs []error
	for _, v4 := range fams {
		errs = append(errs, b.host.Do(func() error {
			ipt, err := b.runner(v4)
			if err != nil {
				return err
			}
			return fn(ipt, v4)
		}))
	}
	return errors.Join(errs...)
}

// runner returns the family's go-iptables runner, opened once per
// process. Call it inside the host namespace.
func (b *iptBackend) runner(v4 bool) (*iptables.IPTables, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ipt := b.ipts[v4]; ipt != nil {
		return ipt, nil
	}
	ipt, err := openIpt(b.flavor, v4)
	if err != nil {
		return nil, err
	}
	if b.ipts == nil {
		b.ipts = map[bool]*iptables.IPTables{}
	}
	b.ipts[v4] = ipt
	return ipt, nil
}

// unapplied runs try (one iptables-restore transaction) for each family
// inside the host namespace, and returns the families where it failed,
// for the one-command-at-a-time path.
func (b *iptBackend) unapplied(fams []bool, try func(v4 bool) error) []bool {
	var out []bool
	for _, v4 := range fams {
		if b.host.Do(func() error { return try(v4) }) != nil {
			out = append(out, v4)
		}
	}
	return out
}

var bothFamilies = []bool{true, false}

// mappedFamilies are the families (v4 true) ms has a mapping of: the
// only ones in which an attachment has a chain.
func mappedFamilies(ms []mapping) []bool {
	var out []bool
	for _, v4 := range bothFamilies {
		if slices.ContainsFunc(ms, func(m mapping) bool { return m.is4() == v4 }) {
			out = append(out, v4)
		}
	}
	return out
}

// Add installs the network's rules when missing and the attachment's
// chain and jumps; on failure what it added is removed.
// Equivalent to: iptables -t nat -N NDA-HASH; iptables -t nat -A NETDRIVERS-DNAT ... -j NDA-HASH
func (b *iptBackend) Add(ctx context.Context, n *Network, a *Attachment) (err error) {
	ms, err := checkAdd(n, a)
	if err != nil {
		return err
	}
	if err := b.ensureNetwork(ctx, n); err != nil {
		return err
	}
	if old, err := b.rec.get(a.Key); err != nil || old != nil {
		if err := errors.Join(err, b.Del(ctx, n, a.Key)); err != nil {
			return err
		}
	}
	var u undo.Stack
	defer u.OnError(&err)
	if err := b.rec.put(a); err != nil {
		return err
	}
	u.Push(func() error { return b.Del(ctx, n, a.Key) })
	// Chain and jumps in one transaction each family; where that fails,
	// one command at a time below.
	fams := b.unapplied(mappedFamilies(ms), func(v4 bool) error { return restoreAddAtt(b.flavor, v4, a.Key, ms) })
	err = b.do(fams, func(ipt *iptables.IPTables, v4 bool) error {
		chain, jumps := iptAttRules(a.Key, ms, v4)
		if err := ipt.ClearChain("nat", iptAttChain(a.Key)); err != nil {
			return fmt.Errorf("create chain nat %s: %w", iptAttChain(a.Key), err)
		}
		for _, r := range append(chain, jumps...) {
			if err := ipt.Append(r.Table, r.Chain, r.Spec...); err != nil {
				return fmt.Errorf("append %s %s %v: %w", r.Table, r.Chain, r.Spec, err)
			}
		}
		return nil
	})
	if err != nil {
		return cnierr.Wrap(cnierr.IOFailure, err)
	}
	return flushUDP(b.host, udpPorts(ms), 0)
}

// Del removes the attachment's jumps and chain: from Add's record, or by
// the hash in the jumps' comments when there is none.
func (b *iptBackend) Del(ctx context.Context, n *Network, key netconf.Key) error {
	if err := validKey(key); err != nil {
		return err
	}
	rec, rerr := b.rec.get(key)
	var ms []mapping
	known := false // the rules are those of the record
	if rec != nil {
		var err error
		ms, err = rec.attachment().mappings(&Network{})
		known = err == nil
	}
	fams := bothFamilies
	if known {
		// Only where Add made a chain; jumps and chain in one transaction
		// each, and where that fails (a rule already gone), one command at
		// a time below.
		fams = b.unapplied(mappedFamilies(ms), func(v4 bool) error { return restoreDelAtt(b.flavor, v4, key, ms) })
	}
	err := b.do(fams, func(ipt *iptables.IPTables, v4 bool) error {
		var errs []error
		_, jumps := iptAttRules(key, ms, v4)
		for _, r := range jumps {
			errs = append(errs, deleteRule(ipt, r))
		}
		if known {
			return errors.Join(append(errs, deleteAttChain(ipt, key))...)
		}
		// No record: jumps carry the hash in a comment.
		left, err := rulesWith(ipt, "nat", iptDNAT, iptAttChain(key))
		errs = append(errs, err)
		for _, line := range left {
			errs = append(errs, deleteRule(ipt, iptRule{Table: "nat", Chain: iptDNAT, Spec: splitRule(line)}))
		}
		return errors.Join(append(errs, deleteAttChain(ipt, key))...)
	})
	err = errors.Join(rerr, err, flushUDP(b.host, udpPorts(ms), 0))
	if err != nil {
		return err
	}
	return b.rec.del(key)
}

// Check verifies the network's and the attachment's rules (iptables -C).
func (b *iptBackend) Check(ctx context.Context, n *Network, a *Attachment) error {
	ms, err := checkAdd(n, a)
	if err != nil {
		return err
	}
	want := map[bool][]iptRule{}
	for _, v4 := range families(n) {
		want[v4] = iptCheckRules(n, a.Key, ms, v4)
	}
	// All of a family's rules in one run; where one is missing, iptables
	// -C for each names it.
	fams := b.unapplied(families(n), func(v4 bool) error { return restoreCheck(b.flavor, v4, want[v4]) })
	err = b.do(fams, func(ipt *iptables.IPTables, v4 bool) error {
		var errs []error
		for _, r := range want[v4] {
			if ok, err := ipt.Exists(r.Table, r.Chain, r.Spec...); err != nil || !ok {
				errs = append(errs, fmt.Errorf("%w: %s %s %v", ErrMissing, r.Table, r.Chain, r.Spec))
			}
		}
		return errors.Join(errs...)
	})
	return errors.Join(err, checkSysctls(b.host, n))
}

// GC deletes n's attachments not in valid and, with none left, n's rules.
func (b *iptBackend) GC(ctx context.Context, n *Network, valid []netconf.Key) error {
	return b.rec.gc(ctx, n, valid, b.Del, b.removeNetwork)
}

// Status checks that the iptables binaries run in the host namespace.
func (b *iptBackend) Status(ctx context.Context) error {
	err := b.do(bothFamilies, func(ipt *iptables.IPTables, v4 bool) error {
		_, err := ipt.ChainExists("filter", "FORWARD")
		return err
	})
	return cnierr.Wrap(cnierr.NotAvailable, err)
}

// ensureNetwork installs the chains, hooks and network n's rules under
// the store lock unless the record says they are current and our chains
// are in the kernel, and the FORWARD guard where a policy drops (read on
// every ADD, see states).
func (b *iptBackend) ensureNetwork(ctx context.Context, n *Network) error {
	p, err := b.probe(n)
	if err == nil && p.current(n) {
		// Forwarding and route_localnet were set when the rules were made
		// (each /proc/sys lookup costs O(namespaces)); CHECK reports them.
		return nil
	}
	l, err := b.rec.store.Lock(ctx, b.rec.lockName())
	if err != nil {
		return err
	}
	defer l.Unlock()
	if p, err = b.probe(n); err != nil {
		return cnierr.Wrap(cnierr.IOFailure, err)
	}
	if !p.marked { // a reload took every network's rules, not only n's
		if err := b.rewriteOthers(n, p.fwd); err != nil {
			return err
		}
	}
	var guarded []string
	if p.built(n) {
		guarded = p.rec.Guarded
	} else if err := b.writeNetwork(n, p.rec); err != nil {
		return err
	}
	if err := ensureSysctls(b.host, n); err != nil {
		return err
	}
	ids, err := b.guard.ensure(n, unguarded(p.fwd, guarded))
	if err != nil {
		return err
	}
	return b.rec.putNet(n, append(guarded, ids...))
}

// rewriteOthers puts back the rules and guards of every recorded network
// but n after the node's firewall dropped them. Their attachments' rules
// stay gone until those are added again, as the reference's do.
func (b *iptBackend) rewriteOthers(n *Network, fwd []fwdState) error {
	recs, err := b.rec.nets()
	errs := []error{err}
	for _, rec := range recs {
		m := &rec.Network
		if m.Name == n.Name {
			continue
		}
		if err := b.writeNetwork(m, nil); err != nil {
			errs = append(errs, err)
			continue
		}
		ids, err := b.guard.ensure(m, unguarded(fwd, nil))
		errs = append(errs, err, b.rec.putNet(m, ids))
	}
	return errors.Join(errs...)
}

// writeNetwork drops the rules of a changed config and installs n's.
func (b *iptBackend) writeNetwork(n *Network, old *netRecord) error {
	if old != nil && !old.current(n) { // the config changed: drop the old network's rules
		if err := b.deleteNetworkRules(&old.Network); err != nil {
			return err
		}
	}
	err := b.do(families(n), func(ipt *iptables.IPTables, v4 bool) error {
		if err := b.ensureSkeleton(ipt, v4); err != nil {
			return err
		}
		for _, r := range iptNetRules(n, v4) {
			if err := appendUnique(ipt, r); err != nil {
				return err
			}
		}
		return nil
	})
	return cnierr.Wrap(cnierr.IOFailure, err)
}

// ensureSkeleton creates our chains and the jumps into them.
func (b *iptBackend) ensureSkeleton(ipt *iptables.IPTables, v4 bool) error {
	for _, c := range iptChains() {
		if err := ensureChain(ipt, c.Table, c.Chain); err != nil {
			return err
		}
	}
	if err := ensureForwardChain(ipt); err != nil {
		return err
	}
	if err := ensureHook(ipt, "filter", iptForward, dropJumpSpec()); err != nil {
		return err
	}
	for _, h := range iptOldHooks(v4) {
		if err := deleteRule(ipt, iptRule{Table: h.Table, Chain: h.From, Spec: h.spec()}); err != nil {
			return err
		}
	}
	for _, h := range iptHooks(v4) {
		if err := ensureHook(ipt, h.Table, h.From, h.spec()); err != nil {
			return err
		}
	}
	return nil
}

func dropJumpSpec() []string {
	return []string{"-m", "comment", "--comment", "netdrivers", "-j", iptDrop}
}

// removeNetwork deletes n's rules and, with no network left, our chains.
func (b *iptBackend) removeNetwork(ctx context.Context, n *Network) error {
	l, err := b.rec.store.Lock(ctx, b.rec.lockName())
	if err != nil {
		return err
	}
	defer l.Unlock()
	errs := []error{b.deleteNetworkRules(n), b.guard.remove(n), b.rec.delNet(n.Name)}
	if nets, err := b.rec.store.List(b.rec.netDir()); err == nil && len(nets) == 0 {
		errs = append(errs, b.deleteSkeleton())
	}
	return errors.Join(errs...)
}

func (b *iptBackend) deleteNetworkRules(n *Network) error {
	return b.do(bothFamilies, func(ipt *iptables.IPTables, v4 bool) error {
		var errs []error
		for _, r := range iptNetRules(n, v4) {
			errs = append(errs, deleteRule(ipt, r))
		}
		return errors.Join(errs...)
	})
}

// deleteSkeleton removes our chains once they hold no rule, with the
// jumps into them.
func (b *iptBackend) deleteSkeleton() error {
	return b.do(bothFamilies, func(ipt *iptables.IPTables, v4 bool) error {
		var errs []error
		errs = append(errs, deleteRule(ipt, iptRule{Table: "filter", Chain: iptForward, Spec: dropJumpSpec()}))
		for _, h := range slices.Concat(iptHooks(v4), iptOldHooks(v4)) {
			errs = append(errs, deleteRule(ipt, iptRule{Table: h.Table, Chain: h.From, Spec: h.spec()}))
		}
		for _, c := range iptChains() {
			errs = append(errs, deleteChainIfEmpty(ipt, c.Table, c.Chain, nil))
		}
		errs = append(errs, removeForwardChainIfEmpty(ipt))
		return errors.Join(errs...)
	})
}

// restoreAddAtt creates (or flushes) the attachment's chain of one family
// and appends its rules and jumps, in one iptables-restore transaction.
func restoreAddAtt(flavor string, v4 bool, key netconf.Key, ms []mapping) error {
	chain, jumps := iptAttRules(key, ms, v4)
	lines, err := restoreLines("-A", append(chain, jumps...))
	if err != nil {
		return err
	}
	// With --noflush, ":CHAIN" creates the chain or flushes it.
	return restoreNat(flavor, v4, append([]string{":" + iptAttChain(key) + " - [0:0]"}, lines...))
}

// restoreDelAtt deletes the attachment's jumps and chain of one family
// in one iptables-restore transaction.
func restoreDelAtt(flavor string, v4 bool, key netconf.Key, ms []mapping) error {
	_, jumps := iptAttRules(key, ms, v4)
	lines, err := restoreLines("-D", jumps)
	if err != nil {
		return err
	}
	ch := iptAttChain(key)
	return restoreNat(flavor, v4, append(lines, "-F "+ch, "-X "+ch))
}

func deleteAttChain(ipt *iptables.IPTables, key netconf.Key) error {
	if err := ipt.ClearAndDeleteChain("nat", iptAttChain(key)); err != nil && !isIptNotExist(err) {
		return fmt.Errorf("delete chain nat %s: %w", iptAttChain(key), err)
	}
	return nil
}
