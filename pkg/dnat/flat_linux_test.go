package dnat

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// TestRepublishWhileRetiring (nftables): a host port another attachment
// publishes is refused with code 101 naming its owner; right after the
// owner's Del (its elements still expiring) the port can be published by
// another container at once, and traffic follows the new mapping.
func TestRepublishWhileRetiring(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t)
	bn := w.newBridge(1, ModeNAT)
	a, b := w.addCtr(bn, 0), w.addCtr(bn, 1)
	be := newNft(w.host.Handle(), w.store)
	be.retireAfter = 100 * time.Millisecond // every Add below finds the port still being retired
	nettest.Listen(t, a.ns, "tcp", ":80", "A")
	nettest.Listen(t, b.ns, "tcp", ":80", "B")
	attA, attB := a.attachment(port("tcp", "", 8080, 80)), b.attachment(port("tcp", "", 8080, 80))
	if err := be.Add(ctx, bn.Network, attA); err != nil {
		t.Fatal(err)
	}
	err := be.Add(ctx, bn.Network, attB)
	if cnierr.CodeOf(err) != cnierr.PortInUse || !strings.Contains(err.Error(), "tcp port 8080") || !strings.Contains(err.Error(), "id=ctr0") {
		t.Fatalf("publishing a port another attachment holds: %v, want code 101 naming the port and ctr0", err)
	}
	if err := be.Check(ctx, bn.Network, attA); err != nil {
		t.Fatalf("the refused Add touched the holder: %v", err)
	}
	reach(t, w.client, "tcp", join(hostOut4, 8080), "A")
	for i, from, to := 0, attA, attB; i < 6; i, from, to = i+1, to, from {
		if err := be.Del(ctx, bn.Network, from.Key); err != nil {
			t.Fatal(err)
		}
		if err := be.Add(ctx, bn.Network, to); err != nil {
			t.Fatalf("round %d: Add right after the holder's Del: %v", i, err)
		}
		if err := be.Check(ctx, bn.Network, to); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
	reach(t, w.client, "tcp", join(hostOut4, 8080), "A") // six swaps: A holds it again
	settle6(t, w, a)
	reach(t, w.client, "tcp", join(hostOut6, 8080), "A")
	if err := be.GC(ctx, bn.Network, nil); err != nil {
		t.Fatal(err)
	}
}

// settle6 waits out IPv6 neighbour discovery between the client, the
// host and c (seconds in a fresh namespace on a loaded machine), so that
// an IPv6 reach fails only for the rules.
func settle6(t *testing.T, w *world, c *ctr) {
	t.Helper()
	nettest.Reachable(t, w.client, hostOut6)
	nettest.Reachable(t, w.host, c.ip6)
}

// TestDelByDeleting: on (older) kernels that cannot update an element's
// timeout Del deletes the elements; that path leaves the ruleset as it
// was at once, with and without Add's record.
func TestDelByDeleting(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t)
	empty := w.ruleset()
	bn := w.newBridge(1, ModeNAT)
	a, b := w.addCtr(bn, 0), w.addCtr(bn, 1)
	be := newNft(w.host.Handle(), w.store)
	be.deleteOnly = true
	nettest.Listen(t, b.ns, "udp", ":53", "B")
	if err := be.Add(ctx, bn.Network, a.attachment(port("tcp", "", 8080, 80))); err != nil {
		t.Fatal(err)
	}
	before := w.ruleset()
	att := b.attachment(port("tcp", "", 8082, 80), port("udp", hostOut4, 5353, 53))
	for _, lose := range []string{"", "record"} {
		if err := be.Add(ctx, bn.Network, att); err != nil {
			t.Fatal(err)
		}
		reach(t, w.client, "udp", join(hostOut4, 5353), "B")
		if lose == "record" {
			if err := be.rec.del(att.Key); err != nil {
				t.Fatal(err)
			}
		}
		if err := be.Del(ctx, bn.Network, att.Key); err != nil {
			t.Fatal(err)
		}
		if got := w.ruleset(); got != before {
			t.Fatalf("ruleset right after Del (record lost: %v):\n%s\nwant:\n%s", lose != "", got, before)
		}
		if n := udpEntries(t, w, 5353); n != 0 {
			t.Errorf("%d conntrack entries of udp port 5353 left after Del", n)
		}
	}
	if err := be.GC(ctx, bn.Network, nil); err != nil {
		t.Fatal(err)
	}
	if got := w.ruleset(); got != empty {
		t.Fatalf("ruleset after GC:\n%s\nwant:\n%s", got, empty)
	}
}

// TestCheckNamesDifferences (nftables): Check says which element is
// missing, maps elsewhere or belongs to someone else, and notices a lost
// marker and network chain.
func TestCheckNamesDifferences(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t)
	bn := w.newBridge(1, ModeNAT)
	a := w.addCtr(bn, 0)
	be := w.backend(backendCase{kind: BackendNftables})
	att := a.attachment(port("tcp", "", 8080, 80), port("udp", hostOut4, 5353, 53))
	if err := be.Add(ctx, bn.Network, att); err != nil {
		t.Fatal(err)
	}
	nft := func(args ...string) { w.host.MustRun(t, "nft", args...) }
	nft("delete", "element", "inet", tableName, mapAny4, "{ tcp . 8080 }")
	nft("add", "element", "inet", tableName, mapAny4, "{ tcp . 8080 : 10.244.1.99 . 80 }")
	nft("delete", "element", "inet", tableName, mapAny6, "{ tcp . 8080 }")
	nft("delete", "element", "inet", tableName, setAtts, fmt.Sprintf(`{ "%s" }`, att.Key.Hash()[:15]))
	out := w.host.MustRun(t, "nft", "-a", "list", "chain", "inet", tableName, chInput)
	handle := regexp.MustCompile(`jump ` + netChainName(bn.Name, "in") + `.* # handle (\d+)`).FindStringSubmatch(out)
	if handle == nil {
		t.Fatalf("no jump into the network's input chain:\n%s", out)
	}
	nft("delete", "rule", "inet", tableName, chInput, "handle", handle[1])
	nft("delete", "chain", "inet", tableName, netChainName(bn.Name, "in"))
	err := be.Check(ctx, bn.Network, att)
	for _, want := range []string{
		"map dnat4-any sends tcp port 8080 of every IPv4 address to 10.244.1.99:80, want 10.244.1.10:80",
		"map dnat6-any has no element for tcp port 8080 of every IPv6 address",
		"set attachments has no element for " + att.Key.Hash(),
		"chain inet netdrivers " + netChainName(bn.Name, "in"),
	} {
		if !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), want) {
			t.Errorf("Check = %v\nwant it to say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "udp port 5353") {
		t.Errorf("Check complains about the intact udp element: %v", err)
	}
	if err := be.GC(ctx, bn.Network, nil); err != nil {
		t.Fatal(err)
	}
}

// TestUDPDelLeavesNoMappedEntry (plugins#123, on the way out): while a
// client keeps sending to a published UDP port, Del leaves no conntrack
// entry that still sends the flow to the container: the mapping is gone
// before the flush, not a tick after it.
func TestUDPDelLeavesNoMappedEntry(t *testing.T) {
	eachBackend(t, func(t *testing.T, ctx context.Context, w *world, bc backendCase) {
		bn := w.newBridge(1, ModeNAT)
		b := w.addCtr(bn, 1)
		be := w.backend(bc)
		if nb, ok := be.(*nftBackend); ok {
			nb.retireAfter = 200 * time.Millisecond // a flush before the mapping is gone would show
		}
		nettest.Listen(t, b.ns, "udp", ":53", "B")
		att := b.attachment(port("udp", "", 5353, 53))
		if err := be.Add(ctx, bn.Network, att); err != nil {
			t.Fatal(err)
		}
		stop := sendUDP(t, w.client, join(hostOut4, 5353))
		nettest.Eventually(t, 3*time.Second, "a mapped conntrack entry", func() error {
			if mappedEntries(t, w, 5353, b.ip4) == 0 {
				return errors.New("none yet")
			}
			return nil
		})
		if err := be.Del(ctx, bn.Network, att.Key); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Millisecond) // datagrams keep coming after Del: none may be mapped
		stop()
		if n := mappedEntries(t, w, 5353, b.ip4); n != 0 {
			t.Errorf("%d conntrack entries still send udp port 5353 to %s after Del", n, b.ip4)
		}
		if err := be.GC(ctx, bn.Network, nil); err != nil {
			t.Fatal(err)
		}
	})
}

// sendUDP sends a datagram to addr every half millisecond from one socket
// of n until the returned stop is called.
func sendUDP(t *testing.T, n *nettest.NS, addr string) (stop func()) {
	t.Helper()
	var c *net.UDPConn
	n.MustDo(t, func() error {
		raddr, err := net.ResolveUDPAddr("udp", addr)
		if err == nil {
			c, err = net.DialUDP("udp", nil, raddr)
		}
		return err
	})
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(500 * time.Microsecond):
				c.Write([]byte("x\n"))
			}
		}
	})
	var once sync.Once
	stop = func() { once.Do(func() { close(done); wg.Wait(); c.Close() }) }
	t.Cleanup(stop)
	return stop
}

// mappedEntries counts the host's conntrack entries of UDP to port whose
// reply comes from cont: the ones DNAT made.
func mappedEntries(t *testing.T, w *world, port uint16, cont string) int {
	t.Helper()
	h, err := netlink.NewHandleAt(vnetns.NsHandle(w.host.Handle().Fd()), unix.NETLINK_NETFILTER)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	flows, err := h.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range flows {
		if f.Forward.Protocol == unix.IPPROTO_UDP && f.Forward.DstPort == port && f.Reverse.SrcIP.String() == cont {
			n++
		}
	}
	return n
}

// TestLegacyFilter reads the iptables-legacy filter table without running
// iptables, and never creates it by looking.
func TestLegacyFilter(t *testing.T) {
	for _, v4 := range []bool{true, false} {
		t.Run(fmt.Sprintf("v4=%v", v4), func(t *testing.T) {
			t.Parallel()
			nettest.RequireRoot(t)
			ns := nettest.NewNS(t)
			ipt, names := "ip6tables-legacy", "ip6_tables_names"
			if v4 {
				ipt, names = "iptables-legacy", "ip_tables_names"
			}
			read := func() (exists, drop, chain bool) {
				t.Helper()
				ns.MustDo(t, func() (err error) { exists, drop, chain, err = legacyFilter(v4); return })
				return
			}
			if exists, _, _ := read(); exists {
				t.Fatal("a fresh namespace has a legacy filter table")
			}
			if out, _ := ns.Run("cat", "/proc/self/net/"+names); strings.Contains(out, "filter") {
				t.Fatal("looking created the legacy filter table")
			}
			for _, step := range []struct {
				args              []string
				exists, drop, our bool
			}{
				{[]string{"-P", "FORWARD", "DROP"}, true, true, false},
				{[]string{"-N", iptForward}, true, true, true},
				{[]string{"-A", "FORWARD", "-j", "ACCEPT"}, true, true, true},
				{[]string{"-P", "FORWARD", "ACCEPT"}, true, false, true},
				{[]string{"-X", iptForward}, true, false, false},
			} {
				ns.MustRun(t, ipt, step.args...)
				if e, d, c := read(); e != step.exists || d != step.drop || c != step.our {
					t.Errorf("after %v: exists %v, drop %v, our chain %v; want %v %v %v", step.args, e, d, c, step.exists, step.drop, step.our)
				}
			}
		})
	}
}

// TestForwardPolicyDropLater: a Docker (or firewalld) started after the
// network was created sets FORWARD to DROP; the next ADD notices it and
// adds the guard, and everything works again.
func TestForwardPolicyDropLater(t *testing.T) {
	for _, bc := range backendCases(t) {
		flavors := []string{bc.flavor}
		if bc.kind == BackendNftables {
			flavors = []string{FlavorLegacy, FlavorNft}
		}
		for _, flavor := range flavors {
			t.Run(bc.name+"/drop-in-"+flavor, func(t *testing.T) {
				t.Parallel()
				ctx := context.Background()
				w := newWorld(t)
				ipt := "iptables-" + flavor
				w.host.MustRun(t, ipt, "-P", "FORWARD", "DROP")
				want := w.ruleset() // what GC must leave: their policy, nothing of ours
				w.host.MustRun(t, ipt, "-P", "FORWARD", "ACCEPT")
				w.host.Sysctl(t, "net/bridge/bridge-nf-call-iptables", "1")
				bn := w.newBridge(1, ModeNAT)
				a, b := w.addCtr(bn, 0), w.addCtr(bn, 1)
				be := w.backend(bc)
				nettest.Listen(t, a.ns, "tcp", ":80", "A")
				if err := be.Add(ctx, bn.Network, a.attachment(port("tcp", "", 8080, 80))); err != nil {
					t.Fatal(err)
				}
				reach(t, w.client, "tcp", join(hostOut4, 8080), "A")
				w.host.MustRun(t, ipt, "-P", "FORWARD", "DROP") // Docker starts
				unreachable(t, w.client, "tcp", join(hostOut4, 8080))
				if err := be.Add(ctx, bn.Network, b.attachment()); err != nil {
					t.Fatal(err)
				}
				reach(t, w.client, "tcp", join(hostOut4, 8080), "A")
				reach(t, b.ns, "tcp", join(a.ip4, 80), "A")
				if err := be.Add(ctx, bn.Network, b.attachment()); err != nil { // guarded now: the fast path
					t.Fatal(err)
				}
				if err := be.GC(ctx, bn.Network, nil); err != nil {
					t.Fatal(err)
				}
				w.settles(t, want, "ruleset after GC")
			})
		}
	}
}

// TestOldLayoutUpgrade (nftables): a table left by the layout with a
// chain per attachment (verdict maps) is brought to the current layout by
// the next ADD, and published ports work.
func TestOldLayoutUpgrade(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t)
	w.host.MustRun(t, "nft", strings.Join([]string{
		"add table inet netdrivers",
		"add chain inet netdrivers nat-prerouting { type nat hook prerouting priority -100; }",
		"add chain inet netdrivers published",
		"add map inet netdrivers pub4 { type ipv4_addr . inet_proto . inet_service : verdict; }",
		"add rule inet netdrivers nat-prerouting fib daddr type local jump published",
		"add rule inet netdrivers published ip daddr . meta l4proto . th dport vmap @pub4",
	}, "; "))
	bn := w.newBridge(1, ModeNAT)
	a := w.addCtr(bn, 0)
	be := w.backend(backendCase{kind: BackendNftables})
	nettest.Listen(t, a.ns, "tcp", ":80", "A")
	att := a.attachment(port("tcp", "", 8080, 80))
	if err := be.Add(ctx, bn.Network, att); err != nil {
		t.Fatal(err)
	}
	if err := be.Check(ctx, bn.Network, att); err != nil {
		t.Fatal(err)
	}
	reach(t, w.client, "tcp", join(hostOut4, 8080), "A")
	if out := w.host.MustRun(t, "nft", "list", "chain", "inet", tableName, chainPub); strings.Contains(out, "vmap") {
		t.Errorf("the published chain still holds the old lookups:\n%s", out)
	}
	// A network that exists (chains, record) in a table without the
	// attachments set is of the older layout too.
	if err := be.Del(ctx, bn.Network, att.Key); err != nil {
		t.Fatal(err)
	}
	w.host.MustRun(t, "nft", "delete", "set", "inet", tableName, setAtts)
	w.host.MustRun(t, "nft", "flush", "chain", "inet", tableName, chainPub)
	if err := be.Add(ctx, bn.Network, att); err != nil {
		t.Fatal(err)
	}
	settle6(t, w, a)
	reach(t, w.client, "tcp", join(hostOut6, 8080), "A")
	if err := be.GC(ctx, bn.Network, nil); err != nil {
		t.Fatal(err)
	}
}

// TestGetAskedAgain: a GET asked twice reports the second answer (the
// network probe can run twice in one ADD).
func TestGetAskedAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t)
	bn := w.newBridge(1, ModeNAT)
	a := w.addCtr(bn, 0)
	be := newNft(w.host.Handle(), w.store)
	att := a.attachment(port("tcp", "", 8080, 80))
	if err := be.Add(ctx, bn.Network, a.attachment()); err != nil { // the table, nothing published
		t.Fatal(err)
	}
	c, err := be.conn()
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	ms, _ := att.mappings(bn.Network)
	g := getElem(mapAny4, attElems(ms)[0].Key)
	for _, want := range []bool{false, true} {
		if err := c.get(g); err != nil {
			t.Fatal(err)
		}
		if _, ok, err := g.elem(); ok != want || err != nil {
			t.Fatalf("element found %v (%v), want %v", ok, err, want)
		}
		if err := be.Add(ctx, bn.Network, att); err != nil {
			t.Fatal(err)
		}
	}
	if err := be.GC(ctx, bn.Network, nil); err != nil {
		t.Fatal(err)
	}
}

// TestManyPorts (nftables): an attachment publishing 1024 ports (the
// plugin's limit) in both families is added, checked and retired; its
// GETs do not overflow the socket.
func TestManyPorts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t)
	bn := w.newBridge(1, ModeNAT)
	a := w.addCtr(bn, 0)
	be := w.backend(backendCase{kind: BackendNftables})
	nettest.Listen(t, a.ns, "tcp", ":80", "A")
	if err := be.Add(ctx, bn.Network, a.attachment()); err != nil { // the network, nothing published
		t.Fatal(err)
	}
	before := w.ruleset()
	att := a.attachment()
	for i := range 1024 {
		att.Ports = append(att.Ports, port("tcp", "", uint16(30000+i), 80))
	}
	if err := be.Add(ctx, bn.Network, att); err != nil {
		t.Fatal(err)
	}
	if err := be.Check(ctx, bn.Network, att); err != nil {
		t.Fatal(err)
	}
	reach(t, w.client, "tcp", join(hostOut4, 31023), "A")
	settle6(t, w, a)
	reach(t, w.client, "tcp", join(hostOut6, 30000), "A")
	if err := be.Add(ctx, bn.Network, att); err != nil { // again, without DEL: retires and re-adds all
		t.Fatal(err)
	}
	if err := be.Del(ctx, bn.Network, att.Key); err != nil {
		t.Fatal(err)
	}
	if err := be.Check(ctx, bn.Network, att); !errors.Is(err, ErrMissing) {
		t.Fatalf("Check after Del = %v, want ErrMissing", err)
	}
	w.settles(t, before, "ruleset after Del")
	if err := be.GC(ctx, bn.Network, nil); err != nil {
		t.Fatal(err)
	}
}
