package test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// TestMacvlanDelegatedIPAM: an IPAM type other than the built-in
// host-local is exec'd for ADD, CHECK, DEL, GC and STATUS: the reference
// static, and the reference host-local binary itself (installed under
// another name, as "host-local" is served in-process).
func TestMacvlanDelegatedIPAM(t *testing.T) {
	nettest.RequireRoot(t)
	ref := nettest.RefBins(t)
	alias := t.TempDir()
	if err := os.Symlink(filepath.Join(ref, "host-local"), filepath.Join(alias, "ref-host-local")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		ipam map[string]any
		want string
	}{
		{"static", map[string]any{"type": "static", "addresses": []any{
			map[string]any{"address": "192.0.2.66/24", "gateway": mvOutIP},
			map[string]any{"address": "2001:db8:4::66/64"}},
			"routes": []any{map[string]any{"dst": "198.51.100.0/24"}}}, "192.0.2.66"},
		{"reference host-local", map[string]any{"type": "ref-host-local", "rangeStart": "192.0.2.40"}, "192.0.2.40"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := newMvLAN(t, false, nettest.Bins(t), ref, alias)
			ipamConf := map[string]any{"subnet": nil, "rangeStart": nil, "rangeEnd": nil, "dataDir": nil}
			if tc.ipam["type"] == "ref-host-local" {
				ipamConf = map[string]any{"subnet": mvSubnet, "dataDir": l.dataDir}
			}
			for k, v := range tc.ipam {
				ipamConf[k] = v
			}
			list := l.list(t, "1.1.0", map[string]any{"ipam": ipamConf})
			before := nettest.Snapshot(t, l.host)
			c := l.attach(t, list)
			if c.addr(false) != tc.want {
				t.Fatalf("address = %s, want %s", c.addr(false), tc.want)
			}
			if got := nettest.Addrs(t, c.ns, "eth0"); got[0].Addr().String() != tc.want {
				t.Errorf("container addresses = %v, want %s", got, tc.want)
			}
			nettest.Reachable(t, c.ns, mvOutIP)
			if tc.name == "static" {
				nettest.Reachable(t, c.ns, mvOutIP6)
				if r := c.ns.MustRun(t, "ip", "route"); !strings.Contains(r, "198.51.100.0/24 via "+mvOutIP) {
					t.Errorf("IPAM route with the gateway of its family missing: %s", r)
				}
			}
			l.cni.MustCheck(t, list, c.rt)
			if err := mvStatus(l, list); err != nil {
				t.Errorf("STATUS: %v", err)
			}
			if err := l.mvGC(t, list, c); err != nil {
				t.Errorf("GC: %v", err)
			}
			l.cni.MustDel(t, list, c.rt)
			l.cni.MustDel(t, list, c.rt)
			l.assertClean(t, before, list.Name)
		})
	}
}

// TestMacvlanReplacesReference: on a live node, containers attached by the
// reference macvlan (with the reference host-local) keep working when our
// binary takes its place: ours CHECKs and DELs them, allocates around
// their addresses in the same store, and the reference binary can DEL
// ours (the same store format).
func TestMacvlanReplacesReference(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	refDir := nettest.RefBins(t)
	l := newMvLAN(t, false)
	refCNI := nettest.NewCNI(t, l.host, refDir)
	// One result cache for both binaries, as on a node where one replaced
	// the other.
	cache := t.TempDir()
	refCNI.CNIConfig = libcni.NewCNIConfigWithCacheDir(refCNI.Path, cache, refCNI)
	l.cni.CNIConfig = libcni.NewCNIConfigWithCacheDir(l.cni.Path, cache, l.cni)
	list := l.list(t, "1.0.0", nil)
	before := nettest.Snapshot(t, l.host)

	oldC := &container{ns: nettest.NewNS(t)}
	oldC.rt = nettest.Runtime(t, oldC.ns, "eth0")
	res, err := refCNI.AddNetworkList(context.Background(), list, oldC.rt)
	if err != nil {
		t.Fatalf("reference ADD: %v", err)
	}
	oldC.res, _ = current.NewResultFromResult(res)
	newC := l.attach(t, list) // our binary now
	if oldC.addr(false) == newC.addr(false) {
		t.Fatalf("both got %s", newC.addr(false))
	}
	nettest.Reachable(t, newC.ns, oldC.addr(false))

	// Ours checks and deletes the reference's attachment, given its
	// cached prevResult as a runtime would.
	l.cni.MustCheck(t, list, oldC.rt)
	l.cni.MustDel(t, list, oldC.rt)
	if nettest.HasLink(t, oldC.ns, "eth0") || slices.Contains(l.storeIPs(t, list.Name), oldC.addr(false)) {
		t.Error("our DEL left the reference's link or address")
	}
	// And the reference deletes ours.
	refCNI.MustDel(t, list, newC.rt)
	if nettest.HasLink(t, newC.ns, "eth0") || len(l.storeIPs(t, list.Name)) > 0 {
		t.Error("the reference's DEL left our link or address")
	}
	// Our intent record is still there; our GC (nothing valid) drops it.
	if err := l.mvGC(t, list); err != nil {
		t.Fatalf("GC: %v", err)
	}
	l.assertClean(t, before, list.Name)
}

// TestMacvlanParallel: 16 ADDs at once on one parent get 16 distinct
// working addresses; 16 DELs at once leave nothing.
func TestMacvlanParallel(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	const n = 16
	l := newMvLAN(t, true)
	list := l.list(t, "1.1.0", map[string]any{"hostShim": true})
	before := nettest.Snapshot(t, l.host)
	conts := make([]*container, n)
	for i := range conts {
		conts[i] = &container{ns: nettest.NewNS(t)}
		conts[i].rt = nettest.Runtime(t, conts[i].ns, "eth0")
	}
	run := func(fn func(c *container) error) {
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i, c := range conts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = fn(c)
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("container %d: %v", i, err)
			}
		}
	}
	run(func(c *container) error {
		res, err := l.cni.AddNetworkList(context.Background(), list, c.rt)
		if err == nil {
			c.res, err = current.NewResultFromResult(res)
		}
		return err
	})
	seen := map[string]bool{}
	for _, c := range conts {
		if seen[c.addr(false)] {
			t.Fatalf("address %s handed out twice", c.addr(false))
		}
		seen[c.addr(false)] = true
	}
	if got := len(l.storeIPs(t, list.Name)); got != n+1 {
		t.Errorf("store holds %d addresses, want %d and the shim's", got, n)
	}
	nettest.Reachable(t, conts[0].ns, conts[n-1].addr(false))
	nettest.Reachable(t, l.host, conts[n/2].addr(false))
	run(func(c *container) error { return l.cni.DelNetworkList(context.Background(), list, c.rt) })
	for _, c := range conts {
		if nettest.HasLink(t, c.ns, "eth0") {
			t.Fatalf("eth0 left in %s", c.ns.Name)
		}
	}
	l.assertClean(t, before, list.Name)
}

// TestMacvlanGC: GC keeps the valid attachments and removes everything
// of the others: the link (their namespace is still there), address,
// shim route and reference, records.
func TestMacvlanGC(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	l := newMvLAN(t, true)
	list := l.list(t, "1.1.0", map[string]any{"hostShim": true})
	other := l.list(t, "1.1.0", nil)
	before := nettest.Snapshot(t, l.host)
	keep, drop := l.attach(t, list), l.attach(t, list)
	bystander := l.attach(t, other)
	if err := l.mvGC(t, list, keep); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if nettest.HasLink(t, drop.ns, "eth0") || slices.Contains(l.storeIPs(t, list.Name), drop.addr(false)) {
		t.Error("GC left the stale attachment's link or address")
	}
	if r := l.host.MustRun(t, "ip", "route"); strings.Contains(r, drop.addr(false)+" ") {
		t.Errorf("GC left the stale shim route: %s", r)
	}
	nettest.Reachable(t, l.host, keep.addr(false))
	nettest.Reachable(t, bystander.ns, mvOutIP)
	l.cni.MustCheck(t, list, keep.rt)
	l.cni.MustCheck(t, other, bystander.rt)

	// With nothing valid, GC removes the rest and the shim; the other
	// network is untouched.
	if err := l.mvGC(t, list); err != nil {
		t.Fatalf("GC with an empty valid list: %v", err)
	}
	if nettest.HasLink(t, keep.ns, "eth0") || len(l.storeIPs(t, list.Name)) > 0 {
		t.Error("GC with nothing valid left a link or an address")
	}
	l.cni.MustCheck(t, other, bystander.rt)
	l.cni.MustDel(t, other, bystander.rt)
	l.assertClean(t, before, list.Name)
}
