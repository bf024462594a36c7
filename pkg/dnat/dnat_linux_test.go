package dnat

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// TestPublish: published ports reach the container from another host
// (source kept), from the host via its own addresses and 127.0.0.1, from
// a container of the same bridge and from the container itself, with
// bridge-nf-call-iptables on and off; nat mode filters unpublished ports
// and direct routing; outbound traffic is masqueraded.
func TestPublish(t *testing.T) {
	eachBackend(t, func(t *testing.T, ctx context.Context, w *world, bc backendCase) {
		bn := w.newBridge(1, ModeNAT)
		a, b := w.addCtr(bn, 0), w.addCtr(bn, 1)
		be := w.backend(bc)
		nettest.Listen(t, a.ns, "tcp", ":80", "A")
		nettest.Listen(t, a.ns, "udp", ":53", "A")
		nettest.Listen(t, a.ns, "tcp", ":9090", "A")
		nettest.Listen(t, w.client, "tcp", ":7000", "C")
		nettest.AddRoute(t, w.client, "10.244.1.0/24", hostOut4) // direct routing attempts
		att := a.attachment(port("tcp", "", 8080, 80), port("udp", "", 5353, 53), port("tcp", "127.0.0.1", 8081, 80))
		if err := be.Add(ctx, bn.Network, att); err != nil {
			t.Fatal(err)
		}
		if err := be.Check(ctx, bn.Network, att); err != nil {
			t.Fatalf("Check after Add: %v", err)
		}
		if got := reach(t, w.client, "tcp", join(hostOut4, 8080), "A"); got != clientOut4 {
			t.Errorf("client source seen as %s, want %s (kept)", got, clientOut4)
		}
		if got := reach(t, w.client, "tcp", join(hostOut6, 8080), "A"); got != clientOut6 {
			t.Errorf("client v6 source seen as %s, want %s", got, clientOut6)
		}
		reach(t, w.client, "udp", join(hostOut4, 5353), "A")
		reach(t, w.client, "udp", join(hostOut6, 5353), "A")
		unreachable(t, w.client, "tcp", join(a.ip4, 9090)) // unpublished
		unreachable(t, w.client, "tcp", join(a.ip4, 80))   // published, but only through DNAT
		unreachable(t, w.client, "tcp", join(hostOut4, 8081))
		for _, brnf := range []string{"1", "0"} {
			w.host.Sysctl(t, "net/bridge/bridge-nf-call-iptables", brnf)
			w.host.Sysctl(t, "net/bridge/bridge-nf-call-ip6tables", brnf)
			reach(t, w.host, "tcp", join(hostOut4, 8080), "A")
			reach(t, w.host, "tcp", join(hostOut6, 8080), "A")
			reach(t, w.host, "tcp", join("127.0.0.1", 8080), "A")
			reach(t, w.host, "tcp", join("127.0.0.1", 8081), "A")
			reach(t, w.host, "udp", join("127.0.0.1", 5353), "A")
			reach(t, b.ns, "tcp", join(hostOut4, 8080), "A")
			reach(t, b.ns, "tcp", join(hostOut6, 8080), "A")
			reach(t, b.ns, "tcp", join("10.244.1.1", 8080), "A")
			reach(t, a.ns, "tcp", join(hostOut4, 8080), "A") // hairpin
			reach(t, a.ns, "tcp", join(hostOut6, 8080), "A")
			reach(t, a.ns, "udp", join(hostOut4, 5353), "A")
			reach(t, b.ns, "tcp", join(a.ip4, 9090), "A") // same bridge: unfiltered
		}
		if got := reach(t, a.ns, "tcp", join(clientOut4, 7000), "C"); got != hostOut4 {
			t.Errorf("outbound source seen as %s, want %s (masqueraded)", got, hostOut4)
		}
		if err := be.Del(ctx, bn.Network, att.Key); err != nil {
			t.Fatal(err)
		}
		unpublished(t, w.client, "tcp", join(hostOut4, 8080))
		if err := be.Check(ctx, bn.Network, att); !errors.Is(err, ErrMissing) {
			t.Errorf("Check after Del = %v, want ErrMissing", err)
		}
		if err := be.GC(ctx, bn.Network, nil); err != nil {
			t.Fatal(err)
		}
	})
}

// TestModes: nat-unprotected lets unpublished ports in, routed neither
// masquerades nor filters, isolated lets nothing in or out and refuses
// published ports.
func TestModes(t *testing.T) {
	eachBackend(t, func(t *testing.T, ctx context.Context, w *world, bc backendCase) {
		unprot, routed, iso := w.newBridge(1, ModeNATUnprotected), w.newBridge(2, ModeRouted), w.newBridge(3, ModeIsolated)
		for _, bn := range []*bridgeNet{unprot, routed, iso} {
			bn.Isolate = false
			nettest.AddRoute(t, w.client, fmt.Sprintf("10.244.%d.0/24", bn.k), hostOut4)
		}
		u, r, i := w.addCtr(unprot, 0), w.addCtr(routed, 0), w.addCtr(iso, 0)
		be := w.backend(bc)
		for _, c := range []*ctr{u, r, i} {
			nettest.Listen(t, c.ns, "tcp", ":9090", "S")
		}
		nettest.Listen(t, w.client, "tcp", ":7000", "C")
		if err := be.Add(ctx, iso.Network, i.attachment(port("tcp", "", 8080, 80))); cnierr.CodeOf(err) != cnierr.InvalidConfig {
			t.Errorf("isolated network with a published port: %v, want code 7", err)
		}
		for _, x := range []struct {
			bn *bridgeNet
			c  *ctr
		}{{unprot, u}, {routed, r}, {iso, i}} {
			if err := be.Add(ctx, x.bn.Network, x.c.attachment()); err != nil {
				t.Fatal(err)
			}
			if err := be.Check(ctx, x.bn.Network, x.c.attachment()); err != nil {
				t.Fatalf("Check of an attachment without ports: %v", err)
			}
		}
		reach(t, w.client, "tcp", join(u.ip4, 9090), "S")
		reach(t, w.client, "tcp", join(r.ip4, 9090), "S")
		unreachable(t, w.client, "tcp", join(i.ip4, 9090))
		if got := reach(t, u.ns, "tcp", join(clientOut4, 7000), "C"); got != hostOut4 {
			t.Errorf("nat-unprotected source seen as %s, want %s", got, hostOut4)
		}
		if got := reach(t, r.ns, "tcp", join(clientOut4, 7000), "C"); got != r.ip4 {
			t.Errorf("routed source seen as %s, want %s", got, r.ip4)
		}
		unreachable(t, i.ns, "tcp", join(clientOut4, 7000))
		unreachable(t, i.ns, "tcp", join("10.244.3.1", 9999))
		nettest.Unreachable(t, i.ns, "10.244.3.1")
		for _, bn := range []*bridgeNet{unprot, routed, iso} {
			if err := be.GC(ctx, bn.Network, nil); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// TestIsolate: two isolating networks cannot reach each other directly,
// but published ports through the host's address still work.
func TestIsolate(t *testing.T) {
	eachBackend(t, func(t *testing.T, ctx context.Context, w *world, bc backendCase) {
		n1, n2 := w.newBridge(1, ModeNAT), w.newBridge(2, ModeNATUnprotected)
		a, b := w.addCtr(n1, 0), w.addCtr(n2, 0)
		be := w.backend(bc)
		nettest.Listen(t, a.ns, "tcp", ":80", "A")
		nettest.Listen(t, b.ns, "tcp", ":80", "B")
		if err := be.Add(ctx, n1.Network, a.attachment(port("tcp", "", 8080, 80))); err != nil {
			t.Fatal(err)
		}
		if err := be.Add(ctx, n2.Network, b.attachment()); err != nil {
			t.Fatal(err)
		}
		reach(t, b.ns, "tcp", join(hostOut4, 8080), "A")
		reach(t, b.ns, "tcp", join(hostOut6, 8080), "A")
		unreachable(t, b.ns, "tcp", join(a.ip4, 80))
		unreachable(t, a.ns, "tcp", join(b.ip4, 80))
		unreachable(t, a.ns, "tcp", join(b.ip6, 80))
		n2.Isolate = false // only n1 isolates: still no way between them
		if err := be.Add(ctx, n2.Network, b.attachment()); err != nil {
			t.Fatal(err)
		}
		unreachable(t, a.ns, "tcp", join(b.ip4, 80))
		n1.Isolate = false
		if err := be.Add(ctx, n1.Network, a.attachment(port("tcp", "", 8080, 80))); err != nil {
			t.Fatal(err)
		}
		reach(t, a.ns, "tcp", join(b.ip4, 80), "B")
		for _, bn := range []*bridgeNet{n1, n2} {
			if err := be.GC(ctx, bn.Network, nil); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// TestDelRestoresRuleset: Del brings the ruleset back to what it was
// before Add, Del twice and Del of an unknown key succeed, GC with no
// valid attachment removes everything the backend made.
func TestDelRestoresRuleset(t *testing.T) {
	eachBackend(t, func(t *testing.T, ctx context.Context, w *world, bc backendCase) {
		empty := w.ruleset()
		bn := w.newBridge(1, ModeNAT)
		a, b := w.addCtr(bn, 0), w.addCtr(bn, 1)
		be := w.backend(bc)
		if err := be.Add(ctx, bn.Network, a.attachment(port("tcp", "", 8080, 80))); err != nil {
			t.Fatal(err)
		}
		before := w.ruleset()
		attB := b.attachment(port("tcp", "", 8082, 80), port("udp", hostOut4, 5353, 53), port("sctp", "::", 9000, 9000))
		if err := be.Add(ctx, bn.Network, attB); err != nil {
			t.Fatal(err)
		}
		if w.ruleset() == before {
			t.Fatal("Add changed nothing")
		}
		for range 2 {
			if err := be.Del(ctx, bn.Network, attB.Key); err != nil {
				t.Fatal(err)
			}
			if err := be.Check(ctx, bn.Network, attB); !errors.Is(err, ErrMissing) { // at once, not a tick later
				t.Fatalf("Check right after Del = %v, want ErrMissing", err)
			}
			w.settles(t, before, "ruleset after Del")
		}
		unknown := netconf.Key{Network: bn.Name, ContainerID: "never-added", IfName: "eth0"}
		if err := be.Del(ctx, bn.Network, unknown); err != nil {
			t.Fatalf("Del of an unknown attachment: %v", err)
		}
		if err := be.GC(ctx, bn.Network, []netconf.Key{a.key}); err != nil {
			t.Fatal(err)
		}
		if got := w.ruleset(); got != before {
			t.Fatalf("GC keeping the valid attachment changed the ruleset:\n%s\nwant:\n%s", got, before)
		}
		if err := be.GC(ctx, bn.Network, nil); err != nil {
			t.Fatal(err)
		}
		if got := w.ruleset(); got != empty {
			t.Fatalf("ruleset after GC differs from before everything:\n%s\nwant:\n%s", got, empty)
		}
	})
}

// TestParallel: 32 Adds of one network at once, then 32 Dels, leave the
// ruleset as it was.
func TestParallel(t *testing.T) {
	eachBackend(t, func(t *testing.T, ctx context.Context, w *world, bc backendCase) {
		empty := w.ruleset()
		bn := w.newBridge(1, ModeNAT)
		a := w.addCtr(bn, 0)
		nettest.Listen(t, a.ns, "tcp", ":80", "A")
		be := w.backend(bc)
		const n = 32
		atts := make([]*Attachment, n)
		for i := range atts {
			atts[i] = &Attachment{Key: netconf.Key{Network: bn.Name, ContainerID: fmt.Sprintf("p%d", i), IfName: "eth0"},
				Addrs: a.attachment().Addrs, Ports: []netconf.Port{port("tcp", "", uint16(20000+i), 80)}}
		}
		run := func(f func(*Attachment) error) {
			var wg sync.WaitGroup
			errs := make([]error, n)
			for i, att := range atts {
				wg.Go(func() { errs[i] = f(att) })
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatal(err)
			}
		}
		run(func(att *Attachment) error { return be.Add(ctx, bn.Network, att) })
		reach(t, w.client, "tcp", join(hostOut4, 20000), "A")
		reach(t, w.client, "tcp", join(hostOut4, 20000+n-1), "A")
		run(func(att *Attachment) error { return be.Del(ctx, bn.Network, att.Key) })
		unpublished(t, w.client, "tcp", join(hostOut4, 20000))
		if err := be.GC(ctx, bn.Network, nil); err != nil {
			t.Fatal(err)
		}
		if got := w.ruleset(); got != empty {
			t.Fatalf("ruleset after parallel Add/Del and GC:\n%s\nwant:\n%s", got, empty)
		}
	})
}

// TestFirewallReload (iptables): the node's firewall reloads its rules
// (iptables-restore of every table, as netfilter-persistent and firewalld
// do, or `nft flush ruleset` under iptables-nft) and takes ours with them;
// the next Add of one network puts back the rules of every network.
func TestFirewallReload(t *testing.T) {
	const tables = "*raw\nCOMMIT\n*nat\nCOMMIT\n*filter\nCOMMIT\n"
	restore := "printf '" + tables + "' | iptables-%[1]s-restore && printf '" + tables + "' | ip6tables-%[1]s-restore"
	for _, bc := range backendCases(t) {
		if bc.kind != BackendIptables {
			continue
		}
		reloads := map[string][]string{"restore": {"sh", "-c", fmt.Sprintf(restore, bc.flavor)}}
		if bc.flavor == FlavorNft {
			reloads["flush"] = []string{"nft", "flush", "ruleset"}
		}
		for name, reload := range reloads {
			t.Run(bc.name+"/"+name, func(t *testing.T) {
				t.Parallel()
				ctx := context.Background()
				w := newWorld(t)
				bn1, bn2 := w.newBridge(1, ModeNAT), w.newBridge(2, ModeNAT)
				a, b, c := w.addCtr(bn1, 0), w.addCtr(bn1, 1), w.addCtr(bn2, 0)
				be := w.backend(bc)
				if err := be.Add(ctx, bn1.Network, a.attachment(port("tcp", "", 8080, 80))); err != nil {
					t.Fatal(err)
				}
				if err := be.Add(ctx, bn2.Network, c.attachment()); err != nil {
					t.Fatal(err)
				}
				w.host.MustRun(t, reload[0], reload[1:]...)
				nettest.Listen(t, b.ns, "tcp", ":80", "B")
				if err := be.Add(ctx, bn1.Network, b.attachment(port("tcp", "", 8081, 80))); err != nil {
					t.Fatal(err)
				}
				reach(t, w.client, "tcp", join(hostOut4, 8081), "B")
				nettest.Listen(t, w.client, "tcp", ":9000", "C")
				if peer := reach(t, b.ns, "tcp", join(clientOut4, 9000), "C"); peer != hostOut4 {
					t.Errorf("from %s the client saw %s, want it masqueraded to %s", b.ip4, peer, hostOut4)
				}
				if err := be.Check(ctx, bn2.Network, c.attachment()); err != nil { // the other network's rules
					t.Errorf("Check of the other network after the reload: %v", err)
				}
				for _, bn := range []*bridgeNet{bn1, bn2} {
					if err := be.GC(ctx, bn.Network, nil); err != nil {
						t.Fatal(err)
					}
				}
			})
		}
	}
}
