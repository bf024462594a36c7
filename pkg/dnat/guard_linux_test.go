package dnat

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// TestLoopbackGuard (CVE-2020-8558): with route_localnet on the bridge,
// a container must not reach the host's 127.0.0.1 services, and nobody
// outside the host reaches a port published on 127.0.0.1.
func TestLoopbackGuard(t *testing.T) {
	eachBackend(t, func(t *testing.T, ctx context.Context, w *world, bc backendCase) {
		bn := w.newBridge(1, ModeNAT)
		a := w.addCtr(bn, 0)
		be := w.backend(bc)
		nettest.Listen(t, a.ns, "tcp", ":80", "A")
		nettest.Listen(t, w.host, "tcp", "127.0.0.1:9999", "H")
		if err := be.Add(ctx, bn.Network, a.attachment(port("tcp", "127.0.0.1", 8081, 80))); err != nil {
			t.Fatal(err)
		}
		reach(t, w.host, "tcp", "127.0.0.1:8081", "A")
		// Send to 127.0.0.1 out of the namespace, as an attacker's kernel would.
		for _, n := range []struct {
			ns  *nettest.NS
			gw  string
			dev string
		}{{a.ns, "10.244.1.1", "eth0"}, {w.client, hostOut4, "eth0"}} {
			n.ns.MustRun(t, "ip", "route", "del", "local", "127.0.0.0/8", "dev", "lo", "table", "local")
			n.ns.MustRun(t, "ip", "route", "add", "127.0.0.0/8", "via", n.gw, "dev", n.dev)
			n.ns.Sysctl(t, "net/ipv4/conf/all/route_localnet", "1")
			n.ns.Sysctl(t, "net/ipv4/conf/"+n.dev+"/route_localnet", "1")
		}
		unreachable(t, a.ns, "tcp", "127.0.0.1:9999")
		unreachable(t, a.ns, "tcp", "127.0.0.1:8081")
		unreachable(t, w.client, "tcp", "127.0.0.1:8081")
		if err := be.GC(ctx, bn.Network, nil); err != nil {
			t.Fatal(err)
		}
	})
}

// TestLoopback6Refused: a port published on every address, dialled on
// [::1] from the node, is refused at once instead of being DNATed into a
// drop (::1 cannot leave lo), also where an older plugin made the rules;
// 127.0.0.1 still serves.
func TestLoopback6Refused(t *testing.T) {
	eachBackend(t, func(t *testing.T, ctx context.Context, w *world, bc backendCase) {
		bn := w.newBridge(1, ModeNAT)
		a := w.addCtr(bn, 0)
		be := w.backend(bc)
		nettest.Listen(t, a.ns, "tcp", ":80", "A")
		att := a.attachment(port("tcp", "", 8080, 80))
		for _, older := range []bool{false, true} {
			if older {
				w.olderLayout(t, bc, bn.Network)
			}
			if err := be.Add(ctx, bn.Network, att); err != nil {
				t.Fatal(err)
			}
			reach(t, w.host, "tcp", "127.0.0.1:8080", "A")
			if _, err := nettest.Dial(w.host, "tcp", "[::1]:8080", time.Second); !errors.Is(err, unix.ECONNREFUSED) {
				t.Errorf("[::1]:8080 from the node (rules of an older plugin: %v): %v, want connection refused", older, err)
			}
		}
		if err := be.GC(ctx, bn.Network, nil); err != nil {
			t.Fatal(err)
		}
	})
}

// olderLayout turns the node's rules into those of a plugin whose nat
// output hook also DNATed ::1.
func (w *world) olderLayout(t *testing.T, bc backendCase, n *Network) {
	if bc.kind == BackendNftables {
		w.host.MustRun(t, "nft", "delete set inet netdrivers "+setLayout+"; flush chain inet netdrivers nat-output; "+
			"add rule inet netdrivers nat-output fib daddr type local jump published")
		return
	}
	ipt := "ip6tables-" + bc.flavor
	w.host.MustRun(t, ipt, append([]string{"-t", "nat", "-D", "OUTPUT"}, iptHooks(false)[3].spec()...)...)
	w.host.MustRun(t, ipt, append([]string{"-t", "nat", "-I", "OUTPUT"}, iptOldHooks(false)[0].spec()...)...)
	if err := (records{store: w.store, backend: BackendIptables + "-" + bc.flavor}).putNet(n, nil); err != nil {
		t.Fatal(err)
	}
}

// udpFrom sends one datagram from a fixed local port and reads the answer.
func udpFrom(n *nettest.NS, lport int, addr string) (string, error) {
	var c *net.UDPConn
	err := n.Do(func() error {
		raddr, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return err
		}
		c, err = net.DialUDP("udp", &net.UDPAddr{Port: lport}, raddr)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.Write([]byte("hello\n")); err != nil {
		return "", err
	}
	buf := make([]byte, 1500)
	nr, err := c.Read(buf)
	return strings.TrimSpace(string(buf[:nr])), err
}

// udpEntries counts the host's conntrack entries for UDP to port.
func udpEntries(t *testing.T, w *world, port uint16) int {
	t.Helper()
	h, err := netlink.NewHandleAt(vnetns.NsHandle(w.host.Handle().Fd()), unix.NETLINK_NETFILTER)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	n := 0
	for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		flows, err := h.ConntrackTableList(netlink.ConntrackTable, fam)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range flows {
			if f.Forward.Protocol == unix.IPPROTO_UDP && f.Forward.DstPort == port {
				n++
			}
		}
	}
	return n
}

// TestUDPConntrackFlush (plugins#123): a client that sent to a UDP host
// port before it was published reaches the container right after Add,
// and Del leaves no entry of the port behind.
func TestUDPConntrackFlush(t *testing.T) {
	eachBackend(t, func(t *testing.T, ctx context.Context, w *world, bc backendCase) {
		bn := w.newBridge(1, ModeNAT)
		a, b := w.addCtr(bn, 0), w.addCtr(bn, 1)
		be := w.backend(bc)
		nettest.Listen(t, b.ns, "udp", ":53", "B")
		// NAT is active (another attachment exists) before the port is published.
		if err := be.Add(ctx, bn.Network, a.attachment(port("tcp", "", 8080, 80))); err != nil {
			t.Fatal(err)
		}
		for _, addr := range []string{join(hostOut4, 5353), join(hostOut6, 5353)} {
			if got, err := udpFrom(w.client, 40000, addr); err == nil {
				t.Fatalf("unpublished %s answered %q", addr, got)
			}
		}
		if n := udpEntries(t, w, 5353); n == 0 {
			t.Fatal("no conntrack entry made before publishing: the test proves nothing")
		}
		// IPv6 neighbour discovery towards a fresh namespace takes seconds: settle it first.
		nettest.Reachable(t, w.host, b.ip6)
		att := b.attachment(port("udp", "", 5353, 53))
		if err := be.Add(ctx, bn.Network, att); err != nil {
			t.Fatal(err)
		}
		for _, addr := range []string{join(hostOut4, 5353), join(hostOut6, 5353)} {
			nettest.Eventually(t, 5*time.Second, "udp from the same source port to "+addr, func() error {
				_, err := udpFrom(w.client, 40000, addr)
				return err
			})
		}
		if err := be.Del(ctx, bn.Network, att.Key); err != nil {
			t.Fatal(err)
		}
		if n := udpEntries(t, w, 5353); n != 0 {
			t.Errorf("%d conntrack entries of udp port 5353 left after Del", n)
		}
		if err := be.GC(ctx, bn.Network, nil); err != nil {
			t.Fatal(err)
		}
	})
}

// TestForwardPolicyDrop: on a host whose iptables FORWARD policy is DROP
// (Docker, firewalld) with bridge-nf-call-iptables=1 everything still
// works, and the policy and their rules are untouched once our networks
// are gone.
func TestForwardPolicyDrop(t *testing.T) {
	for _, bc := range backendCases(t) {
		flavors := []string{bc.flavor}
		if bc.kind == BackendNftables {
			flavors = []string{FlavorLegacy, FlavorNft}
		}
		for _, flavor := range flavors {
			for _, docker := range []bool{false, true} {
				name := fmt.Sprintf("%s/drop-in-%s/docker-user-%v", bc.name, flavor, docker)
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					testForwardPolicyDrop(t, bc, flavor, docker)
				})
			}
		}
	}
}

func testForwardPolicyDrop(t *testing.T, bc backendCase, flavor string, docker bool) {
	ctx := context.Background()
	w := newWorld(t)
	ipt := "iptables-" + flavor
	w.host.MustRun(t, ipt, "-P", "FORWARD", "DROP")
	w.host.MustRun(t, "ip6tables-"+flavor, "-P", "FORWARD", "DROP")
	if docker {
		w.host.MustRun(t, ipt, "-N", "DOCKER-USER")
		w.host.MustRun(t, ipt, "-A", "FORWARD", "-j", "DOCKER-USER")
		w.host.MustRun(t, ipt, "-A", "FORWARD", "-i", "docker0", "-j", "ACCEPT")
	}
	w.host.Sysctl(t, "net/bridge/bridge-nf-call-iptables", "1")
	before := w.ruleset()
	bn := w.newBridge(1, ModeNAT)
	a, b := w.addCtr(bn, 0), w.addCtr(bn, 1)
	be := w.backend(bc)
	nettest.Listen(t, a.ns, "tcp", ":80", "A")
	nettest.Listen(t, w.client, "tcp", ":7000", "C")
	if err := be.Add(ctx, bn.Network, a.attachment(port("tcp", "", 8080, 80))); err != nil {
		t.Fatal(err)
	}
	if err := be.Add(ctx, bn.Network, b.attachment()); err != nil {
		t.Fatal(err)
	}
	reach(t, w.client, "tcp", join(hostOut4, 8080), "A")
	reach(t, w.client, "tcp", join(hostOut6, 8080), "A")
	reach(t, a.ns, "tcp", join(clientOut4, 7000), "C")
	reach(t, b.ns, "tcp", join(a.ip4, 80), "A")
	reach(t, b.ns, "tcp", join(hostOut4, 8080), "A")
	if docker {
		if out := w.host.MustRun(t, ipt, "-S", "DOCKER-USER"); !strings.Contains(out, iptForward) {
			t.Errorf("no jump from DOCKER-USER:\n%s", out)
		}
	}
	if err := be.GC(ctx, bn.Network, nil); err != nil {
		t.Fatal(err)
	}
	if got := w.ruleset(); got != before {
		t.Fatalf("ruleset after GC:\n%s\nwant (as before):\n%s", got, before)
	}
}

// TestForwardingSysctls: forwarding is switched on only for networks
// that need it, keeping router advertisements accepted where they were.
func TestForwardingSysctls(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t)
	w.host.Sysctl(t, "net/ipv6/conf/vout/accept_ra", "1")
	iso := w.newBridge(1, ModeIsolated)
	be := w.backend(backendCase{kind: BackendNftables})
	if err := be.Add(ctx, iso.Network, w.addCtr(iso, 0).attachment()); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
		if v := w.host.ReadSysctl(t, k); v != "0" {
			t.Errorf("isolated network: %s = %s, want 0", k, v)
		}
	}
	bn := w.newBridge(2, ModeNAT)
	if err := be.Add(ctx, bn.Network, w.addCtr(bn, 0).attachment()); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"net/ipv4/ip_forward": "1", "net/ipv6/conf/all/forwarding": "1",
		"net/ipv6/conf/vout/accept_ra": "2", "net/ipv4/conf/ndbr2/route_localnet": "1",
	} {
		if v := w.host.ReadSysctl(t, k); v != want {
			t.Errorf("%s = %s, want %s", k, v, want)
		}
	}
	for _, n := range []*bridgeNet{iso, bn} {
		if err := be.GC(ctx, n.Network, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDelPartlyGone: Del removes everything also when Add's record was
// lost (a wiped state dir) or some objects were already deleted by hand.
func TestDelPartlyGone(t *testing.T) {
	eachBackend(t, func(t *testing.T, ctx context.Context, w *world, bc backendCase) {
		bn := w.newBridge(1, ModeNAT)
		a, b := w.addCtr(bn, 0), w.addCtr(bn, 1)
		be := w.backend(bc)
		if err := be.Add(ctx, bn.Network, a.attachment(port("tcp", "", 8080, 80))); err != nil {
			t.Fatal(err)
		}
		before := w.ruleset()
		att := b.attachment(port("tcp", "", 8082, 80), port("udp", hostOut4, 5353, 53))
		for _, lose := range []string{"record", "element", "jump"} {
			if lose == "jump" && bc.kind != BackendIptables {
				continue
			}
			if err := be.Add(ctx, bn.Network, att); err != nil {
				t.Fatal(err)
			}
			switch {
			case lose == "record":
				rec := filepathOfRecord(w, bc, att.Key)
				if err := os.Remove(rec); err != nil {
					t.Fatal(err)
				}
			case bc.kind == BackendNftables:
				w.host.MustRun(t, "nft", "delete", "element", "inet", tableName, mapAny4, "{ tcp . 8082 }")
			case lose == "jump": // DEL's one transaction then fails; one command at a time goes on
				ms, err := checkAdd(bn.Network, att)
				if err != nil {
					t.Fatal(err)
				}
				_, jumps := iptAttRules(att.Key, ms, true)
				w.host.MustRun(t, "iptables-"+bc.flavor, append([]string{"-t", "nat", "-D", jumps[0].Chain}, jumps[0].Spec...)...)
			default:
				w.host.MustRun(t, "iptables-"+bc.flavor, "-t", "nat", "-F", iptAttChain(att.Key))
			}
			if err := be.Del(ctx, bn.Network, att.Key); err != nil {
				t.Fatalf("Del with the %s gone: %v", lose, err)
			}
			w.settles(t, before, "ruleset after Del with the "+lose+" gone")
		}
		if err := be.GC(ctx, bn.Network, nil); err != nil {
			t.Fatal(err)
		}
	})
}

func filepathOfRecord(w *world, bc backendCase, k netconf.Key) string {
	name := bc.kind
	if bc.flavor != "" {
		name += "-" + bc.flavor
	}
	return w.store.Path(records{backend: name}.attPath(k))
}

// TestRestoreDelAtt: an attachment's jumps and chain go in one
// iptables-restore transaction, a comment with quotes and spaces
// included; a transaction that cannot apply changes nothing.
func TestRestoreDelAtt(t *testing.T) {
	for _, bc := range backendCases(t) {
		if bc.kind != BackendIptables {
			continue
		}
		t.Run(bc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			w := newWorld(t)
			bn := w.newBridge(1, ModeNAT)
			c := w.addCtr(bn, 0)
			before := w.ruleset()
			c.key.IfName = `e"th0` // the comment, with its spaces, also gets a quote
			att := c.attachment(port("tcp", "", 8082, 80), port("udp", "", 5353, 53))
			be := w.backend(bc)
			if err := be.Add(ctx, bn.Network, att); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { be.GC(ctx, bn.Network, nil) })
			added := w.ruleset()
			ms, err := checkAdd(bn.Network, att)
			if err != nil {
				t.Fatal(err)
			}
			host := w.host.Handle()
			rules := func(v4 bool) []iptRule { return iptCheckRules(bn.Network, att.Key, ms, v4) }
			for _, v4 := range bothFamilies {
				if err := host.Do(func() error { return restoreCheck(bc.flavor, v4, rules(v4)) }); err != nil {
					t.Fatalf("v4 %v: checking the rules Add made in one run: %v", v4, err)
				}
			}
			for _, v4 := range bothFamilies {
				if err := host.Do(func() error { return restoreDelAtt(bc.flavor, v4, att.Key, ms[:1]) }); err == nil {
					t.Fatalf("v4 %v: deleting one jump and a chain that another jump names succeeded", v4)
				}
			}
			if got := w.ruleset(); got != added {
				t.Fatalf("a failed transaction changed the ruleset:\n%s\nwant:\n%s", got, added)
			}
			for _, v4 := range bothFamilies {
				if err := host.Do(func() error { return restoreDelAtt(bc.flavor, v4, att.Key, ms) }); err != nil {
					t.Fatalf("v4 %v: %v", v4, err)
				}
			}
			for _, v4 := range bothFamilies {
				if err := host.Do(func() error { return restoreCheck(bc.flavor, v4, rules(v4)) }); err == nil {
					t.Fatalf("v4 %v: checking in one run found the deleted rules", v4)
				}
			}
			if err := be.Check(ctx, bn.Network, att); !errors.Is(err, ErrMissing) {
				t.Fatalf("Check after the transaction = %v, want ErrMissing", err)
			}
			if err := be.Del(ctx, bn.Network, att.Key); err != nil { // the record
				t.Fatal(err)
			}
			if err := be.GC(ctx, bn.Network, nil); err != nil {
				t.Fatal(err)
			}
			w.settles(t, before, "ruleset after the transaction")
		})
	}
}

func TestRestoreLine(t *testing.T) {
	r := iptRule{Table: "nat", Chain: "NETDRIVERS-DNAT", Spec: []string{"-p", "tcp", "-m", "comment", "--comment", `netdrivers h if=e"th0`, "-j", "NDA-x"}}
	if got, ok := restoreLine("-D", r); !ok || got != `-D NETDRIVERS-DNAT -p tcp -m comment --comment "netdrivers h if=e\"th0" -j NDA-x` {
		t.Errorf("restoreLine = %q, %v", got, ok)
	}
	r.Spec[5] = `if=a\b`
	if got, ok := restoreLine("-D", r); ok {
		t.Errorf("restoreLine with a backslash = %q, want refused", got)
	}
}
