package dnat

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/nettest"
	"github.com/netdrivers/netdrivers/pkg/state"
)

// backendCase is one backend the root tests run against.
type backendCase struct {
	name   string // test name
	kind   string // New's name
	flavor string // iptables flavor
}

func backendCases(t *testing.T) []backendCase {
	cases := []backendCase{{name: "nftables", kind: BackendNftables}}
	for _, f := range []string{FlavorLegacy, FlavorNft} {
		if _, err := exec.LookPath("iptables-" + f); err == nil {
			cases = append(cases, backendCase{name: "iptables-" + f, kind: BackendIptables, flavor: f})
		}
	}
	return cases
}

// eachBackend runs fn for every backend as a parallel subtest, each in a
// world of its own.
func eachBackend(t *testing.T, fn func(t *testing.T, ctx context.Context, w *world, bc backendCase)) {
	for _, bc := range backendCases(t) {
		t.Run(bc.name, func(t *testing.T) {
			t.Parallel()
			fn(t, context.Background(), newWorld(t), bc)
		})
	}
}

// Addresses: containers of network k live in 10.244.k.0/24 and
// fd00:244:k::/64; the outside client is 198.51.100.2 and 2001:db8:1::2,
// the host's outside address 198.51.100.1 and 2001:db8:1::1.
const (
	hostOut4   = "198.51.100.1"
	hostOut6   = "2001:db8:1::1"
	clientOut4 = "198.51.100.2"
	clientOut6 = "2001:db8:1::2"
)

// world is a throwaway host namespace with an outside client linked to it.
type world struct {
	t      testing.TB
	host   *nettest.NS
	client *nettest.NS
	store  *state.Store
}

func newWorld(t testing.TB) *world {
	t.Helper()
	nettest.RequireRoot(t)
	w := &world{t: t, host: nettest.NewNS(t), client: nettest.NewNS(t)}
	var err error
	if w.store, err = state.OpenAt(context.Background(), t.TempDir()); err != nil {
		t.Fatal(err)
	}
	nettest.NewVeth(t, w.host, "vout", "", w.client, "eth0", "")
	nettest.AddAddr(t, w.host, "vout", hostOut4+"/24")
	nettest.AddAddr(t, w.host, "vout", hostOut6+"/64")
	nettest.AddAddr(t, w.client, "eth0", clientOut4+"/24")
	nettest.AddAddr(t, w.client, "eth0", clientOut6+"/64")
	nettest.AddRoute(t, w.client, "default", hostOut4)
	nettest.AddRoute(t, w.client, "default", hostOut6)
	return w
}

func (w *world) backend(bc backendCase) Backend {
	w.t.Helper()
	var (
		b   Backend
		err error
	)
	if bc.kind == BackendIptables {
		b, err = NewIptables(w.host.Handle(), w.store, IptablesOptions{Flavor: bc.flavor})
	} else {
		b, err = New(bc.kind, w.host.Handle(), w.store)
	}
	if err != nil {
		w.t.Fatal(err)
	}
	return b
}

// bridgeNet is a bridge in the host namespace with gateway addresses.
type bridgeNet struct {
	*Network
	k int
}

func (w *world) newBridge(k int, mode Mode) *bridgeNet {
	t := w.t
	t.Helper()
	name := fmt.Sprintf("ndbr%d", k)
	la := netlink.NewLinkAttrs()
	la.Name = name
	if err := w.host.NL(t).LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
		t.Fatalf("add bridge: %v", err)
	}
	gw4, gw6 := fmt.Sprintf("10.244.%d.1", k), fmt.Sprintf("fd00:244:%d::1", k)
	nettest.SetUp(t, w.host, name, gw4+"/24")
	nettest.AddAddr(t, w.host, name, gw6+"/64")
	return &bridgeNet{k: k, Network: &Network{
		Name: fmt.Sprintf("net%d-%s", k, netName.ReplaceAllString(strings.ToLower(t.Name()), "-")), Bridge: name,
		Subnets:  []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", k)), netip.MustParsePrefix(fmt.Sprintf("fd00:244:%d::/64", k))},
		Gateways: []netip.Addr{netip.MustParseAddr(gw4), netip.MustParseAddr(gw6)},
		Mode:     mode, Masquerade: true, Isolate: true,
	}}
}

// ctr is a container namespace on a bridge.
type ctr struct {
	ns     *nettest.NS
	ip4    string
	ip6    string
	key    netconf.Key
	hostIf string
}

// addCtr makes container i of bridge bn: a veth into the bridge (hairpin
// on, as host-local-bridge sets it), addresses and default routes.
func (w *world) addCtr(bn *bridgeNet, i int) *ctr {
	t := w.t
	t.Helper()
	c := &ctr{ns: nettest.NewNS(t), ip4: fmt.Sprintf("10.244.%d.%d", bn.k, 10+i), ip6: fmt.Sprintf("fd00:244:%d::%x", bn.k, 16+i),
		hostIf: fmt.Sprintf("vc%d-%d", bn.k, i)}
	c.key = netconf.Key{Network: bn.Name, ContainerID: fmt.Sprintf("ctr%d", i), IfName: "eth0"}
	nettest.NewVeth(t, w.host, c.hostIf, "", c.ns, "eth0", "")
	nl := w.host.NL(t)
	port := nettest.Link(t, w.host, c.hostIf)
	if err := nl.LinkSetMaster(port, nettest.Link(t, w.host, bn.Bridge)); err != nil {
		t.Fatal(err)
	}
	if err := nl.LinkSetHairpin(port, true); err != nil {
		t.Fatal(err)
	}
	nettest.AddAddr(t, c.ns, "eth0", c.ip4+"/24")
	nettest.AddAddr(t, c.ns, "eth0", c.ip6+"/64")
	nettest.AddRoute(t, c.ns, "default", bn.Gateways[0].String())
	nettest.AddRoute(t, c.ns, "default", bn.Gateways[1].String())
	return c
}

func (c *ctr) attachment(ports ...netconf.Port) *Attachment {
	return &Attachment{Key: c.key, Addrs: []netip.Addr{netip.MustParseAddr(c.ip4), netip.MustParseAddr(c.ip6)}, Ports: ports}
}

func join(ip string, port int) string { return net.JoinHostPort(ip, fmt.Sprint(port)) }

// reach asserts that a dial from n to addr is answered by want (the
// server's reply word) and returns the peer address the server saw.
func reach(t *testing.T, n *nettest.NS, network, addr, want string) string {
	t.Helper()
	var got string
	nettest.Eventually(t, 3*time.Second, fmt.Sprintf("%s %s from %s", network, addr, n.Name), func() (err error) {
		got, err = nettest.Dial(n, network, addr, 400*time.Millisecond)
		if err == nil && !strings.HasPrefix(got, want+" ") {
			err = fmt.Errorf("answered %q, want %q", got, want)
		}
		return err
	})
	host, _, _ := net.SplitHostPort(strings.TrimPrefix(got, want+" "))
	return host
}

// unreachable asserts that a dial from n to addr gets no answer.
func unreachable(t *testing.T, n *nettest.NS, network, addr string) {
	t.Helper()
	if got, err := nettest.Dial(n, network, addr, 400*time.Millisecond); err == nil {
		t.Fatalf("%s %s from %s answered %q; want no answer", network, addr, n.Name, got)
	}
}

// unpublished: addr stops answering from n within a retired element's
// lifetime (it expires at the kernel's next tick; Del does not wait for
// TCP ones).
func unpublished(t *testing.T, n *nettest.NS, network, addr string) {
	t.Helper()
	deadline := time.Now().Add(retireWait)
	for {
		got, err := nettest.Dial(n, network, addr, 400*time.Millisecond)
		if err != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s from %s still answered %q %v after Del; want no answer", network, addr, n.Name, got, retireWait)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

var (
	netName  = regexp.MustCompile(`[^a-z0-9_.-]+`)
	counters = regexp.MustCompile(`\[\d+:\d+\]`)
	// tables iptables-nft creates on first use and never removes: their
	// content is compared through iptables-nft-save.
	xtTable = regexp.MustCompile(`^table ip6? (filter|nat|raw|mangle|security) \{`)
	// what iptables-save prints for an untouched table
	xtEmpty = regexp.MustCompile(`^(\*\w+|COMMIT|:(PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) ACCEPT ?)$`)
)

// ruleset is the host namespace's whole packet filter as text: nft list
// ruleset plus iptables-save of both flavors and families. Tables that
// exist but hold nothing (iptables-nft leaves them behind) do not show.
func (w *world) ruleset() string {
	w.t.Helper()
	var b strings.Builder
	out, err := w.host.Run("nft", "list", "ruleset")
	if err != nil {
		w.t.Fatal(err)
	}
	skip := false
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "table ") {
			skip = xtTable.MatchString(l)
		}
		if !skip {
			b.WriteString(l + "\n")
		}
		if l == "}" {
			skip = false
		}
	}
	for _, cmd := range []string{"iptables-legacy-save", "ip6tables-legacy-save", "iptables-nft-save", "ip6tables-nft-save"} {
		if _, err := exec.LookPath(cmd); err != nil {
			continue
		}
		out, err := w.host.Run(cmd)
		if err != nil {
			w.t.Fatal(err)
		}
		for _, l := range strings.Split(out, "\n") {
			l = counters.ReplaceAllString(l, "")
			if !strings.HasPrefix(l, "#") && !xtEmpty.MatchString(l) && l != "" {
				b.WriteString(cmd + ": " + l + "\n")
			}
		}
	}
	return b.String()
}

// settles asserts that the ruleset becomes want. The nftables backend's
// Del leaves its map elements to expire at the next tick (1-10 ms), and
// `nft list` shows them until then; everything else must match at once.
func (w *world) settles(t *testing.T, want, what string) {
	t.Helper()
	nettest.Eventually(t, 2*time.Second, what, func() error {
		if got := w.ruleset(); got != want {
			return fmt.Errorf("ruleset:\n%s\nwant:\n%s", got, want)
		}
		return nil
	})
}
