//go:build soak

package soak

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sort"
	"strings"
	"sync"

	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netlink"

	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// att is one live attachment.
type att struct {
	net     *network
	ns      *nettest.NS
	rt      *libcni.RuntimeConf
	addrs   []netip.Addr // held by it alone (ownsAddrs networks)
	id      netns.ID     // the namespace its path shows
	target  *att         // joinns: the container it joined
	joiners int          // joinns attachments targeting it
	busy    bool         // a worker operates on it
}

// registry holds the live attachments and the addresses they hold. Every
// change of an attachment's state happens under mu; a busy attachment
// belongs to one worker (the runtime never runs two calls for one
// container at once).
type registry struct {
	mu    sync.Mutex
	live  []*att
	addrs map[netip.Addr]*att
	dups  []string // violations: one address held by two live attachments
	paths []string // every container path the soak made
	netMu map[*network]*sync.RWMutex
}

func newRegistry(nets []*network) *registry {
	r := &registry{addrs: map[netip.Addr]*att{}, netMu: map[*network]*sync.RWMutex{}}
	for _, n := range nets {
		r.netMu[n] = &sync.RWMutex{}
	}
	return r
}

// path notes a container path made by the soak.
func (r *registry) path(p string) {
	r.mu.Lock()
	r.paths = append(r.paths, p)
	r.mu.Unlock()
}

// register makes a as live, idle, holding its addresses. An address some
// other live attachment holds is a violation.
func (r *registry) register(a *att) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ip := range a.addrs {
		if other, ok := r.addrs[ip]; ok {
			r.dups = append(r.dups, fmt.Sprintf("%s given to %s on %s while %s on %s holds it",
				ip, a.rt.ContainerID, a.net.name, other.rt.ContainerID, other.net.name))
			continue
		}
		r.addrs[ip] = a
	}
	r.live = append(r.live, a)
}

// claim picks an idle live attachment matching ok and marks it busy.
func (r *registry) claim(rng *rand.Rand, ok func(*att) bool) *att {
	r.mu.Lock()
	defer r.mu.Unlock()
	var cands []*att
	for _, a := range r.live {
		if !a.busy && ok(a) {
			cands = append(cands, a)
		}
	}
	if len(cands) == 0 {
		return nil
	}
	a := cands[rng.IntN(len(cands))]
	a.busy = true
	return a
}

// release marks a idle again.
func (r *registry) release(a *att) {
	r.mu.Lock()
	a.busy = false
	r.mu.Unlock()
}

// unregister drops a busy attachment before its DEL: from then on its
// addresses may be handed out again.
func (r *registry) unregister(a *att) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ip := range a.addrs {
		if r.addrs[ip] == a {
			delete(r.addrs, ip)
		}
	}
	for i, b := range r.live {
		if b == a {
			r.live = append(r.live[:i], r.live[i+1:]...)
			break
		}
	}
	if a.target != nil {
		a.target.joiners--
	}
}

// pickTarget picks a live bridge or macvlan container for a joinns ADD
// and counts the joiner in, so that it is not deleted under it.
func (r *registry) pickTarget(rng *rand.Rand) *att {
	r.mu.Lock()
	defer r.mu.Unlock()
	var cands []*att
	for _, a := range r.live {
		if a.net.ownsAddrs && !a.busy { // busy: maybe being deleted
			cands = append(cands, a)
		}
	}
	if len(cands) == 0 {
		return nil
	}
	a := cands[rng.IntN(len(cands))]
	a.joiners++
	return a
}

func (r *registry) dropJoiner(a *att) {
	r.mu.Lock()
	a.joiners--
	r.mu.Unlock()
}

// count is the number of live attachments.
func (r *registry) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.live)
}

// scan checks the kernel while the soak runs: every idle attachment's
// interface holds exactly its addresses, and no address is on two of
// them or on a host shim of the node. It returns the violations.
func (r *registry) scan(n *node) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[netip.Addr]string{}
	var out []string
	note := func(ip netip.Addr, who string) {
		if prev, ok := seen[ip]; ok {
			out = append(out, fmt.Sprintf("kernel: %s is on %s and on %s", ip, prev, who))
		}
		seen[ip] = who
	}
	for _, a := range r.live {
		if a.busy || !a.net.ownsAddrs {
			continue
		}
		got, err := linkAddrs(a.ns, a.rt.IfName)
		for _, ip := range got {
			note(ip, a.rt.ContainerID)
		}
		if err != nil || !sameAddrs(got, a.addrs) {
			out = append(out, fmt.Sprintf("kernel: %s on %s holds %v (%v), its result said %v", a.rt.ContainerID, a.net.name, got, err, a.addrs))
		}
	}
	nl, err := n.host.Handle().Netlink()
	if err != nil {
		return append(out, fmt.Sprintf("scan the node: %v", err))
	}
	links, _ := nl.LinkList()
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, "mvshim") {
			got, _ := linkAddrs(n.host, l.Attrs().Name)
			for _, ip := range got {
				note(ip, "the host shim "+l.Attrs().Name)
			}
		}
	}
	return out
}

// linkAddrs lists the global addresses of a link. Unlike the nettest
// helpers it returns errors instead of failing the test: it runs on
// worker goroutines.
func linkAddrs(ns *nettest.NS, name string) ([]netip.Addr, error) {
	nl, err := ns.Handle().Netlink()
	if err != nil {
		return nil, err
	}
	l, err := nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find %s in %s: %w", name, ns.Name, err)
	}
	list, err := nl.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range list {
		if a.Scope == int(netlink.SCOPE_UNIVERSE) {
			out = append(out, addrOf(a.IP))
		}
	}
	return out, nil
}

func sameAddrs(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	x := append([]netip.Addr(nil), a...)
	y := append([]netip.Addr(nil), b...)
	sort.Slice(x, func(i, j int) bool { return x[i].Less(x[j]) })
	sort.Slice(y, func(i, j int) bool { return y[i].Less(y[j]) })
	for i := range x {
		if x[i] != y[i] {
			return false
		}
	}
	return true
}
