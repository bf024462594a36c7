//go:build soak

package soak

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// callTimeout bounds one plugin call; a call that hangs is an error.
const callTimeout = 2 * time.Minute

// soak is one run: the node, the live attachments, the counters.
type soak struct {
	n       *node
	reg     *registry
	st      *stats
	left    atomic.Int64 // operations still to start
	maxLive int
	seq     atomic.Int64
}

// step runs one random operation: ADD while below maxLive, DEL, CHECK,
// traffic, GC or STATUS. An operation without a candidate becomes an ADD.
func (s *soak) step(rng *rand.Rand) {
	r := rng.IntN(100)
	live := s.reg.count()
	s.st.setPeak(live)
	ok := false
	switch {
	case r < 42 && live < s.maxLive:
		s.add(rng)
		return
	case r < 72:
		ok = s.del(rng)
	case r < 86:
		ok = s.check(rng)
	case r < 94:
		ok = s.ping(rng)
	case r < 97:
		ok = s.gc(rng)
	default:
		ok = s.status(rng)
	}
	if !ok {
		if live >= s.maxLive {
			s.del(rng)
		} else {
			s.add(rng)
		}
	}
}

func ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), callTimeout)
}

// call runs fn as verb on net, timed and counted.
func (s *soak) call(verb string, net *network, fn func(context.Context) error) error {
	c, cancel := ctx()
	defer cancel()
	start := time.Now()
	err := fn(c)
	s.st.done(verb, net, time.Since(start), err)
	return err
}

// ports picks one or two published ports from a small pool, so that
// attachments (bridge containers and hostns reservations) collide.
func ports(rng *rand.Rand) []map[string]any {
	var out []map[string]any
	for i := 0; i <= rng.IntN(2); i++ {
		proto := []string{"tcp", "udp"}[rng.IntN(2)]
		p := 18100 + rng.IntN(16)
		dup := false
		for _, q := range out {
			dup = dup || (q["hostPort"] == p && q["protocol"] == proto)
		}
		if !dup {
			out = append(out, map[string]any{"hostPort": p, "containerPort": 80, "protocol": proto})
		}
	}
	return out
}

// add attaches a new container to a random network, as a runtime does:
// a failed ADD is followed by DEL. A success is checked against the
// kernel before it counts as live.
func (s *soak) add(rng *rand.Rand) {
	net := s.n.nets[rng.IntN(len(s.n.nets))]
	var target *att
	if net.plugin == "joinns" {
		if target = s.reg.pickTarget(rng); target == nil {
			net = s.n.nets[0]
		}
	}
	ns, err := nettest.CreateNS(fmt.Sprintf("%s%d-%d", nsPrefix, os.Getpid(), s.seq.Add(1)))
	if err != nil {
		s.st.violation("NEWNS", net, err)
		return
	}
	s.reg.path(ns.Path())
	defer func() {
		if target != nil && ns != nil {
			s.reg.dropJoiner(target)
		}
	}()
	rt := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("soak-%d-%s", s.seq.Add(1), nettest.RandHex(8)), NetNS: ns.Path(), IfName: "eth0"}
	if net.ports && rng.IntN(2) == 0 {
		rt.CapabilityArgs = map[string]any{"portMappings": ports(rng)}
	}
	if target != nil {
		tgt := target.ns.Path()
		if rng.IntN(2) == 0 {
			tgt = target.rt.ContainerID
		}
		rt.Args = [][2]string{{"TARGET", tgt}}
	}
	mu := s.reg.netMu[net]
	mu.RLock()
	defer mu.RUnlock()
	var res types.Result
	err = s.call("ADD", net, func(c context.Context) (err error) {
		res, err = s.n.cni.AddNetworkList(c, net.list, rt)
		return err
	})
	if err == nil {
		var a *att
		if a, err = s.verify(net, ns, rt, res, target); err == nil {
			s.reg.register(a)
			ns = nil // live now; its DEL removes it
			return
		}
		s.st.violation("VERIFY", net, err)
	}
	s.call("DEL", net, func(c context.Context) error { return s.n.cni.DelNetworkList(c, net.list, rt) })
	ns.Remove()
}

// verify checks a successful ADD against the kernel: the result's
// addresses are on the container's interface, and a re-bound path shows
// the node (hostns) or the target (joinns).
func (s *soak) verify(net *network, ns *nettest.NS, rt *libcni.RuntimeConf, res types.Result, target *att) (*att, error) {
	a := &att{net: net, ns: ns, rt: rt, target: target}
	id, err := netns.IDOf(ns.Path())
	if err != nil {
		return nil, err
	}
	a.id = id
	switch net.plugin {
	case "hostns":
		if id != s.n.host.Handle().ID() {
			return nil, fmt.Errorf("%s shows %v, not the node", ns.Path(), id)
		}
	case "joinns":
		if id != target.id {
			return nil, fmt.Errorf("%s shows %v, not the target %s (%v)", ns.Path(), id, target.rt.ContainerID, target.id)
		}
	}
	if !net.ownsAddrs {
		return a, nil
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return nil, err
	}
	for _, ipc := range r.IPs {
		a.addrs = append(a.addrs, addrOf(ipc.Address.IP))
	}
	got, err := linkAddrs(ns, rt.IfName)
	if err != nil || len(a.addrs) == 0 || !sameAddrs(got, a.addrs) {
		return nil, fmt.Errorf("%s holds %v (%v) on %s, the result says %v", rt.ContainerID, got, err, rt.IfName, a.addrs)
	}
	return a, nil
}

// delVariants are the ways a runtime ends an attachment: a plain DEL; DEL
// then containerd's second DEL (no netns, no prevResult); the namespace
// gone first, then DEL; and gone, DEL without netns and prevResult, then
// the cached DEL.
var delVariants = []string{"DEL", "DEL twice", "DEL gone", "DEL gone noprev"}

// del ends a random idle attachment nobody joined.
func (s *soak) del(rng *rand.Rand) bool {
	a := s.reg.claim(rng, func(a *att) bool { return a.joiners == 0 })
	if a == nil {
		return false
	}
	mu := s.reg.netMu[a.net]
	mu.RLock()
	defer mu.RUnlock()
	s.reg.unregister(a)
	s.delAtt(a, delVariants[rng.IntN(len(delVariants))])
	return true
}

func (s *soak) delAtt(a *att, variant string) {
	bare := *a.rt
	bare.NetNS = ""
	cached := func(c context.Context) error { return s.n.cni.DelNetworkList(c, a.net.list, a.rt) }
	uncached := func(c context.Context) error { return s.n.fresh.DelNetworkList(c, a.net.list, &bare) }
	switch variant {
	case "DEL":
		s.call("DEL", a.net, cached)
	case "DEL twice":
		s.call("DEL", a.net, cached)
		s.call("DEL", a.net, uncached)
	case "DEL gone":
		a.ns.Remove()
		s.call("DEL", a.net, cached)
	case "DEL gone noprev":
		a.ns.Remove()
		s.call("DEL", a.net, uncached)
		s.call("DEL", a.net, cached)
	}
	a.ns.Remove()
}

// check runs CHECK on a random idle attachment.
func (s *soak) check(rng *rand.Rand) bool {
	a := s.reg.claim(rng, func(*att) bool { return true })
	if a == nil {
		return false
	}
	defer s.reg.release(a)
	mu := s.reg.netMu[a.net]
	mu.RLock()
	defer mu.RUnlock()
	s.call("CHECK", a.net, func(c context.Context) error { return s.n.cni.CheckNetworkList(c, a.net.list, a.rt) })
	return true
}

// ping sends real traffic to a random container with an address: from
// the node (bridge; macvlan through the host shim) or from the LAN.
func (s *soak) ping(rng *rand.Rand) bool {
	a := s.reg.claim(rng, func(a *att) bool { return a.net.ownsAddrs })
	if a == nil {
		return false
	}
	defer s.reg.release(a)
	from := s.n.host
	if a.net.pingFrom == "lan" {
		from = s.n.lan
	}
	var dst netip.Addr
	for _, ip := range a.addrs {
		if ip.Is4() {
			dst = ip
		}
	}
	s.call("PING", a.net, func(c context.Context) error {
		var err error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			if err = nettest.Ping(from, dst.String(), time.Second); err == nil {
				return nil
			}
		}
		return fmt.Errorf("ping %s from the %s%s: %w", dst, a.net.pingFrom, s.diagnose(from, a, dst), err)
	})
	return true
}

// gc runs GC on a random network with every live attachment of it valid,
// exclusive with its ADDs and DELs (the CNI spec: GC never runs
// concurrently with them for one network).
func (s *soak) gc(rng *rand.Rand) bool {
	net := s.gcNet(rng)
	mu := s.reg.netMu[net]
	mu.Lock()
	defer mu.Unlock()
	s.reg.mu.Lock()
	valid := []types.GCAttachment{}
	for _, a := range s.reg.live {
		if a.net == net {
			valid = append(valid, types.GCAttachment{ContainerID: a.rt.ContainerID, IfName: a.rt.IfName})
		}
	}
	s.reg.mu.Unlock()
	s.call("GC", net, func(c context.Context) error {
		return s.n.cni.GCNetworkList(c, net.list, &libcni.GCArgs{ValidAttachments: valid})
	})
	return true
}

func (s *soak) status(rng *rand.Rand) bool {
	net := s.gcNet(rng)
	s.call("STATUS", net, func(c context.Context) error { return s.n.cni.GetStatusNetworkList(c, net.list) })
	return true
}

func (s *soak) gcNet(rng *rand.Rand) *network {
	for {
		if net := s.n.nets[rng.IntN(len(s.n.nets))]; net.gc {
			return net
		}
	}
}

// diagnose says why dst may not answer. The usual cause is a neighbour
// entry of the sender that still holds the MAC of the address's previous
// holder: a reused address whose new holder was not announced.
func (s *soak) diagnose(from *nettest.NS, a *att, dst netip.Addr) string {
	neigh, _ := from.Run("ip", "neigh", "show", "to", dst.String())
	mac := "unknown"
	if nl, err := a.ns.Handle().Netlink(); err == nil {
		if l, err := nl.LinkByName(a.rt.IfName); err == nil {
			mac = l.Attrs().HardwareAddr.String()
		}
	}
	if f := strings.Fields(neigh); len(f) > 4 && f[3] == "lladdr" && f[4] != mac {
		return fmt.Sprintf(": stale neighbour entry %q, the container's MAC is %s (a reused address whose new holder was not announced)", strings.TrimSpace(neigh), mac)
	}
	return fmt.Sprintf(": neighbour entry %q, the container's MAC is %s", strings.TrimSpace(neigh), mac)
}
