package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/nettest"
	"github.com/netdrivers/netdrivers/pkg/safefile"
)

// TestMacvlanHostShim: without the shim the host cannot reach its macvlan
// containers (the kernel never delivers between a parent and its
// macvlans); with hostShim it can, both ways, with real TCP. The shim is
// shared by two networks on the parent, reference-counted, and goes with
// the last attachment, its pool address with it.
func TestMacvlanHostShim(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	l := newMvLAN(t, true)
	before := nettest.Snapshot(t, l.host)

	plain := l.list(t, "1.0.0", nil)
	p := l.attach(t, plain)
	nettest.Reachable(t, p.ns, mvOutIP)
	nettest.Unreachable(t, l.host, p.addr(false))

	shimA := l.list(t, "1.1.0", map[string]any{"hostShim": true,
		"ipam": map[string]any{"rangeStart": "192.0.2.100", "rangeEnd": "192.0.2.149"}})
	shimB := l.list(t, "1.1.0", map[string]any{"hostShim": true, "hostShimIP": "192.0.2.250",
		"ipam": map[string]any{"rangeStart": "192.0.2.150", "rangeEnd": "192.0.2.199"}})
	a1, a2, b1 := l.attach(t, shimA), l.attach(t, shimA), l.attach(t, shimB)
	for _, c := range []*container{a1, a2, b1} {
		nettest.Reachable(t, l.host, c.addr(false))
		nettest.Reachable(t, c.ns, mvHostIP) // back to the node's own address
		nettest.Reachable(t, c.ns, mvOutIP)
	}
	// One shim for both networks: its pool address from A, B's configured one.
	shim := l.shim(t)
	assertMACKept(t, l.host, shim, "")
	addrs := nettest.Addrs(t, l.host, shim)
	if len(addrs) != 2 || addrs[1].String() != "192.0.2.250/32" || addrs[0].Bits() != 32 {
		t.Errorf("shim addresses = %v, want one /32 from A's pool and 192.0.2.250/32", addrs)
	}
	if ips := l.storeIPs(t, shimA.Name); len(ips) != 3 {
		t.Errorf("A's store = %v, want two containers and the shim", ips)
	}
	// TCP from the host to a container and back.
	nettest.Listen(t, a1.ns, "tcp4", ":7000", "hi")
	if got, err := nettest.Dial(l.host, "tcp4", a1.addr(false)+":7000", 3*time.Second); err != nil || !strings.HasPrefix(got, "hi ") {
		t.Errorf("host -> container TCP = %q, %v", got, err)
	}
	nettest.Listen(t, l.host, "tcp4", ":7001", "node")
	if got, err := nettest.Dial(a1.ns, "tcp4", mvHostIP+":7001", 3*time.Second); err != nil || !strings.HasPrefix(got, "node "+a1.addr(false)) {
		t.Errorf("container -> host TCP = %q, %v", got, err)
	}
	l.cni.MustCheck(t, shimA, a1.rt)

	// CHECK notices a lost route.
	l.host.MustRun(t, "ip", "route", "del", a2.addr(false)+"/32", "dev", shim)
	if err := l.cni.CheckNetworkList(context.Background(), shimA, a2.rt); err == nil || !strings.Contains(err.Error(), a2.addr(false)) {
		t.Errorf("CHECK with the shim route gone = %v, want an error naming %s", err, a2.addr(false))
	}

	// DEL copes with the route already gone; A's other attachment stays
	// reachable. A's last attachment goes: its shim address too, B keeps
	// the shim.
	l.cni.MustDel(t, shimA, a2.rt)
	nettest.Reachable(t, l.host, a1.addr(false))
	l.cni.MustDel(t, shimA, a1.rt)
	if got := nettest.Addrs(t, l.host, shim); len(got) != 1 || got[0].String() != "192.0.2.250/32" {
		t.Errorf("shim addresses after A left = %v, want only B's", got)
	}
	if ips := l.storeIPs(t, shimA.Name); len(ips) != 0 {
		t.Errorf("A's store after its last DEL = %v, want empty (shim address released)", ips)
	}
	nettest.Reachable(t, l.host, b1.addr(false))
	l.cni.MustDel(t, shimB, b1.rt)
	l.cni.MustDel(t, shimB, b1.rt)
	l.cni.MustDel(t, plain, p.rt)
	l.assertClean(t, before, shimA.Name)
}

// TestMacvlanParentVanishes: the parent goes away under shim attachments
// (the kernel takes the macvlans and the shim with it): DEL still cleans
// up everything, and once the parent is back, new attachments get a new
// shim that works.
func TestMacvlanParentVanishes(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	l := newMvLAN(t, true)
	list := l.list(t, "1.1.0", map[string]any{"hostShim": true})
	a, b := l.attach(t, list), l.attach(t, list)
	nettest.Reachable(t, l.host, a.addr(false))
	l.host.MustRun(t, "ip", "link", "del", l.parent)
	l.cni.MustDel(t, list, a.rt)

	// The parent comes back (same name); a new attachment rebuilds the
	// shim next to b's stale reference.
	nettest.NewVeth(t, l.host, l.parent, mvHostIP+"/24", l.out, "eth0", mvOutIP+"/24")
	c := l.attach(t, list)
	nettest.Reachable(t, l.host, c.addr(false))
	nettest.Reachable(t, c.ns, mvOutIP)
	l.cni.MustCheck(t, list, c.rt)
	l.cni.MustDel(t, list, b.rt)
	nettest.Reachable(t, l.host, c.addr(false))
	l.cni.MustDel(t, list, c.rt)
	if f := l.stateFiles(t); len(f) > 0 || len(l.storeIPs(t, list.Name)) > 0 {
		t.Errorf("left: state %v, addresses %v", f, l.storeIPs(t, list.Name))
	}
	for _, n := range l.shimLinks(t) {
		t.Errorf("shim %s outlived the last attachment", n)
	}
}

// TestMacvlanHostShimDualStack: the shim routes IPv6 too, with an address
// of each family from the pool.
func TestMacvlanHostShimDualStack(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	l := newMvLAN(t, true)
	before := nettest.Snapshot(t, l.host)
	list := l.list(t, "1.1.0", map[string]any{"hostShim": true, "ipam": map[string]any{"subnet": nil, "rangeStart": nil, "rangeEnd": nil,
		"ranges": []any{
			[]any{map[string]any{"subnet": mvSubnet, "rangeStart": "192.0.2.60"}},
			[]any{map[string]any{"subnet": mvSubnet6, "rangeStart": "2001:db8:4::60"}}}}})
	c := l.attach(t, list)
	for _, ip := range []string{c.addr(false), c.addr(true)} {
		nettest.Reachable(t, l.host, ip)
	}
	nettest.Listen(t, c.ns, "tcp6", "["+c.addr(true)+"]:7002", "v6")
	if got, err := nettest.Dial(l.host, "tcp6", "["+c.addr(true)+"]:7002", 3*time.Second); err != nil || !strings.HasPrefix(got, "v6 ") {
		t.Errorf("host -> container TCP over IPv6 = %q, %v", got, err)
	}
	l.cni.MustCheck(t, list, c.rt)

	// An admin flushes the shim: CHECK says so, the next ADD repairs the
	// shim's addresses.
	shim := l.shim(t)
	l.host.MustRun(t, "ip", "addr", "flush", "dev", shim, "scope", "global")
	if err := l.cni.CheckNetworkList(context.Background(), list, c.rt); err == nil {
		t.Error("CHECK passed with the shim's addresses flushed")
	}
	d := l.attach(t, list)
	nettest.Reachable(t, l.host, d.addr(false))
	nettest.Reachable(t, l.host, d.addr(true))
	l.cni.MustDel(t, list, c.rt)
	l.cni.MustDel(t, list, d.rt)
	l.assertClean(t, before, list.Name)
}

// TestMacvlanJoinnsTarget: joinns finds a macvlan container by its
// container ID (macvlan records its namespace on ADD and forgets it on
// DEL), so a sidecar can share its stack and its LAN address.
func TestMacvlanJoinnsTarget(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	l := newMvLAN(t, false)
	list := l.list(t, "1.0.0", nil)
	c := l.attach(t, list)
	join := nettest.ConfList(t, map[string]any{"cniVersion": "1.0.0", "name": "mv-join",
		"plugins": []any{map[string]any{"type": "joinns"}}})
	side := nettest.NewNS(t)
	rt := nettest.Runtime(t, side, "eth0")
	rt.Args = [][2]string{{"IgnoreUnknown", "1"}, {"TARGET", c.rt.ContainerID}}
	res, err := current.NewResultFromResult(l.cni.MustAdd(t, join, rt))
	if err != nil {
		t.Fatal(err)
	}
	// The sidecar's path now holds the macvlan container's namespace.
	if id, err := netns.IDOf(side.Path()); err != nil || id != c.ns.Handle().ID() {
		t.Errorf("sidecar path holds %v (%v), want the macvlan container's %v", id, err, c.ns.Handle().ID())
	}
	if len(res.IPs) == 0 || res.IPs[0].Address.IP.String() != c.addr(false) {
		t.Errorf("joinns result %v, want the macvlan container's %s", res.IPs, c.addr(false))
	}
	l.cni.MustDel(t, join, rt)
	l.cni.MustDel(t, list, c.rt)
	other := nettest.Runtime(t, nettest.NewNS(t), "eth0")
	other.Args = rt.Args
	if _, err := l.cni.AddNetworkList(context.Background(), join, other); err == nil {
		t.Error("joinns still found the macvlan container after its DEL")
	}
}

// TestMacvlanShimStagedRecords: a kill between the link and the rename of
// a shim write leaves a record only under its staging name; DEL still
// finds it, takes back the route, the shim, its pool address, and leaves
// no file.
func TestMacvlanShimStagedRecords(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	l := newMvLAN(t, true)
	before := nettest.Snapshot(t, l.host)
	list := l.list(t, "1.1.0", map[string]any{"hostShim": true,
		"ipam": map[string]any{"rangeStart": "192.0.2.100", "rangeEnd": "192.0.2.149"}})
	c := l.attach(t, list)
	nettest.Reachable(t, l.host, c.addr(false))
	files := l.stateFiles(t)
	staged := 0
	for _, f := range files {
		if strings.HasPrefix(f, "macvlan/shim/") && strings.HasSuffix(f, ".json") {
			p := filepath.Join(l.cni.StateDir, f)
			if err := os.Rename(p, safefile.TempName(p)); err != nil { // as if killed before the rename
				t.Fatal(err)
			}
			staged++
		}
	}
	if staged != 2 {
		t.Fatalf("state files %v: want the shim's network record and the container's reference", files)
	}
	l.cni.MustDel(t, list, c.rt)
	l.assertClean(t, before, list.Name)
}

// TestMacvlanShimAddressHeldUntilRouteGone: DEL frees the container's
// address only after its shim route is gone. Released first, the address
// went to a concurrent ADD whose route, same destination, the DEL then
// deleted: the new container was unreachable from the node (found by the
// soak). Holding the shim's lock stops the DEL before its shim step; an
// ADD in that window must find the one-address pool still taken.
func TestMacvlanShimAddressHeldUntilRouteGone(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	l := newMvLAN(t, true)
	list := l.list(t, "1.1.0", map[string]any{"hostShim": true, "hostShimIP": "192.0.2.250",
		"ipam": map[string]any{"rangeStart": "192.0.2.120", "rangeEnd": "192.0.2.120"}})
	a := l.attach(t, list)
	nettest.Reachable(t, l.host, a.addr(false))

	ctx := context.Background()
	lock, err := safefile.Acquire(ctx, filepath.Join(l.cni.StateDir, "locks", "macvlan-shim-"+l.parent))
	if err != nil {
		t.Fatal(err)
	}
	delDone := make(chan error, 1)
	go func() { delDone <- l.cni.DelNetworkList(ctx, list, a.rt) }()
	time.Sleep(300 * time.Millisecond) // the DEL reaches the lock
	b := nettest.NewNS(t)
	brt := nettest.Runtime(t, b, "eth0")
	addCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = l.cni.AddNetworkList(addCtx, list, brt)
	cancel()
	if nettest.Code(err) != 100 {
		t.Errorf("ADD while the DEL had not detached its shim route: %v, want code 100 (address still held)", err)
	}
	lock.Unlock()
	if err := <-delDone; err != nil {
		t.Fatal(err)
	}
	l.cni.MustDel(t, list, brt) // whatever that ADD left
	c := l.attach(t, list)
	if c.addr(false) != a.addr(false) {
		t.Fatalf("the one-address pool gave %s, then %s", a.addr(false), c.addr(false))
	}
	nettest.Reachable(t, l.host, c.addr(false))
	l.cni.MustDel(t, list, c.rt)
}

// TestMacvlanShimReferenceGoesLast: DEL drops its shim reference only
// after the shim is pruned, so a DEL killed while pruning (the crash suite
// found one: the shim link outlived the second DEL, which no longer found
// a reference to clean up from) leaves the reference for the next one.
// Holding the address store's lock stops the DEL inside the pruning, where
// it gives the shim's pool address back.
func TestMacvlanShimReferenceGoesLast(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	l := newMvLAN(t, true)
	list := l.list(t, "1.1.0", map[string]any{"hostShim": true}) // the shim's address from the pool
	a := l.attach(t, list)
	refs := filepath.Join(l.cni.StateDir, "macvlan", "shim", "*", "*", "*.json")
	if got, _ := filepath.Glob(refs); len(got) != 1 {
		t.Fatalf("shim references after ADD: %v, want one", got)
	}
	shim := l.shim(t)

	ctx := context.Background()
	lock, err := safefile.Acquire(ctx, filepath.Join(l.dataDir, list.Name, "lock"))
	if err != nil {
		t.Fatal(err)
	}
	delDone := make(chan error, 1)
	go func() { delDone <- l.cni.DelNetworkList(ctx, list, a.rt) }()
	// The pruning takes the shim's addresses off, then waits for the store.
	nettest.Eventually(t, 5*time.Second, "the DEL inside the shim's pruning", func() error {
		if addrs := nettest.Addrs(t, l.host, shim); len(addrs) != 0 {
			return fmt.Errorf("shim still has %v", addrs)
		}
		return nil
	})
	time.Sleep(100 * time.Millisecond)
	got, _ := filepath.Glob(refs)
	lock.Unlock()
	if len(got) != 1 {
		t.Errorf("shim references while the DEL prunes the shim: %v, want the DEL's own still there", got)
	}
	if err := <-delDone; err != nil {
		t.Fatal(err)
	}
	if got, _ := filepath.Glob(refs); len(got) != 0 {
		t.Errorf("shim references after DEL: %v", got)
	}
	if nettest.HasLink(t, l.host, shim) {
		t.Error("the shim outlived the last attachment")
	}
}
