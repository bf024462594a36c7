package test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// TestMacvlanLifecycle: ADD→CHECK→DEL→DEL for every spec version, then
// containerd's DEL with neither netns nor prevResult, with kernel state,
// traffic to the outside host and leftovers asserted.
func TestMacvlanLifecycle(t *testing.T) {
	nettest.RequireRoot(t)
	for _, ver := range cniplugin.SupportedVersions {
		t.Run(ver, func(t *testing.T) {
			t.Parallel()
			l := newMvLAN(t, true)
			list := l.list(t, ver, nil)
			before := nettest.Snapshot(t, l.host)
			c := l.attach(t, list)

			mv := mvLink(t, c.ns, "eth0")
			if mv.Mode != netlink.MACVLAN_MODE_BRIDGE {
				t.Errorf("mode = %d, want bridge", mv.Mode)
			}
			if p := nettest.Link(t, l.host, l.parent); mv.ParentIndex != p.Attrs().Index {
				t.Errorf("parent index = %d, want %s's %d", mv.ParentIndex, l.parent, p.Attrs().Index)
			}
			addrs := nettest.Addrs(t, c.ns, "eth0")
			if len(addrs) != 1 || addrs[0].String() != c.addr(false)+"/24" {
				t.Errorf("container addresses = %v, want %s/24 from the result", addrs, c.addr(false))
			}
			if atLeast(ver, "0.3.0") {
				ifc := c.res.Interfaces
				if len(ifc) != 1 || ifc[0].Name != "eth0" || ifc[0].Sandbox != c.ns.Path() || ifc[0].Mac != mv.HardwareAddr.String() {
					t.Errorf("result interfaces = %+v, want eth0 with MAC %s in %s", ifc, mv.HardwareAddr, c.ns.Path())
				}
			}
			nettest.Reachable(t, c.ns, mvOutIP)
			if atLeast(ver, "0.4.0") {
				l.cni.MustCheck(t, list, c.rt)
			}
			if atLeast(ver, "1.1.0") {
				if err := mvStatus(l, list); err != nil {
					t.Errorf("STATUS: %v", err)
				}
			}
			for range 2 {
				l.cni.MustDel(t, list, c.rt)
			}
			if nettest.HasLink(t, c.ns, "eth0") {
				t.Error("eth0 still in the container after DEL")
			}
			nodeHelper(t, l.host, "@netdrivers-link-reaper") // it deleted eth0 (pkg/reaper)
			c.rt.NetNS = ""
			l.cni.MustDel(t, list, c.rt) // containerd's second DEL: no netns, no prevResult
			if _, err := l.execMv(t, "DEL", l.mvPlugin(map[string]any{"cniVersion": ver, "name": list.Name}), &container{rt: c.rt}); err != nil {
				t.Errorf("DEL without netns or prevResult: %v", err)
			}
			l.assertClean(t, before, list.Name)
		})
	}
}

// TestMacvlanNoVersion: a config without cniVersion means 0.1.0, and gets
// a 0.1.0 result.
func TestMacvlanNoVersion(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	l := newMvLAN(t, false)
	conf := l.mvPlugin(map[string]any{"name": "mv-nover"})
	c := &container{ns: nettest.NewNS(t), rt: nettest.Runtime(t, nil, "eth0")}
	out, err := l.execMv(t, "ADD", conf, c)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	var res struct {
		CNIVersion string `json:"cniVersion"`
		IP4        struct {
			IP string `json:"ip"`
		} `json:"ip4"`
	}
	if err := json.Unmarshal(out, &res); err != nil || res.IP4.IP == "" || res.CNIVersion != "0.1.0" {
		t.Fatalf("result %s: want a 0.1.0 result with ip4 (%v)", out, err)
	}
	if got := nettest.Addrs(t, c.ns, "eth0"); len(got) != 1 || got[0].String() != res.IP4.IP {
		t.Errorf("container addresses = %v, want %s", got, res.IP4.IP)
	}
	if _, err := l.execMv(t, "DEL", conf, c); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if nettest.HasLink(t, c.ns, "eth0") || len(l.storeIPs(t, "mv-nover")) > 0 {
		t.Error("DEL left the link or the address")
	}
}

// TestMacvlanModes: bridge lets two containers on one parent talk, private
// and vepa (no hairpinning switch here) do not; every mode reaches the
// outside host.
func TestMacvlanModes(t *testing.T) {
	nettest.RequireRoot(t)
	for _, tc := range []struct {
		mode     string
		kernel   netlink.MacvlanMode
		neighbor bool
	}{
		{"bridge", netlink.MACVLAN_MODE_BRIDGE, true},
		{"private", netlink.MACVLAN_MODE_PRIVATE, false},
		{"vepa", netlink.MACVLAN_MODE_VEPA, false},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			t.Parallel()
			l := newMvLAN(t, false)
			list := l.list(t, "1.0.0", map[string]any{"mode": tc.mode})
			a, b := l.attach(t, list), l.attach(t, list)
			for _, c := range []*container{a, b} {
				if m := mvLink(t, c.ns, "eth0").Mode; m != tc.kernel {
					t.Errorf("mode = %d, want %s", m, tc.mode)
				}
				nettest.Reachable(t, c.ns, mvOutIP)
			}
			if tc.neighbor {
				nettest.Reachable(t, a.ns, b.addr(false))
				nettest.Reachable(t, b.ns, a.addr(false))
				// Real TCP too, not only ICMP.
				nettest.Listen(t, b.ns, "tcp4", b.addr(false)+":8080", "hello")
				got, err := nettest.Dial(a.ns, "tcp4", b.addr(false)+":8080", 3*time.Second)
				if err != nil || !strings.HasPrefix(got, "hello "+a.addr(false)) {
					t.Errorf("TCP a->b = %q, %v", got, err)
				}
			} else {
				nettest.Unreachable(t, a.ns, b.addr(false))
			}
			l.cni.MustCheck(t, list, a.rt)
			l.cni.MustDel(t, list, a.rt)
			l.cni.MustDel(t, list, b.rt)
		})
	}
}

// TestMacvlanPassthru: passthru takes the parent (the container gets its
// MAC and no other macvlan fits beside it) and gives it back on DEL.
func TestMacvlanPassthru(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	l := newMvLAN(t, false)
	list := l.list(t, "1.0.0", map[string]any{"mode": "passthru", "mac": "02:00:00:00:00:99"})
	pmac := nettest.Link(t, l.host, l.parent).Attrs().HardwareAddr.String()
	a := l.attach(t, list)
	mv := mvLink(t, a.ns, "eth0")
	if mv.Mode != netlink.MACVLAN_MODE_PASSTHRU || mv.HardwareAddr.String() != pmac {
		t.Errorf("passthru link: mode %d MAC %s, want passthru with the parent's %s", mv.Mode, mv.HardwareAddr, pmac)
	}
	if a.res.Interfaces[0].Mac != pmac {
		t.Errorf("result MAC = %s, want the parent's %s", a.res.Interfaces[0].Mac, pmac)
	}
	nettest.Reachable(t, a.ns, mvOutIP)
	l.cni.MustCheck(t, list, a.rt)

	// The parent is taken: a second attachment, of any mode, fails (102).
	for _, mode := range []string{"passthru", "bridge"} {
		other := l.list(t, "1.0.0", map[string]any{"mode": mode})
		ns := nettest.NewNS(t)
		_, err := l.cni.AddNetworkList(context.Background(), other, nettest.Runtime(t, ns, "eth0"))
		if code := nettest.Code(err); code != 102 || !strings.Contains(err.Error(), l.parent) {
			t.Errorf("second ADD (%s) on a passthru parent = %v (code %d), want 102 naming %s", mode, err, code, l.parent)
		}
		if nettest.HasLink(t, ns, "eth0") || len(l.storeIPs(t, other.Name)) > 0 {
			t.Errorf("failed ADD (%s) left a link or an address", mode)
		}
	}
	l.cni.MustDel(t, list, a.rt)
	b := l.attach(t, l.list(t, "1.0.0", nil)) // free again
	nettest.Reachable(t, b.ns, mvOutIP)
}

// TestMacvlanSecondAdd: a second ADD of the same attachment without DEL
// fails (the interface exists) and leaves the first one whole.
func TestMacvlanSecondAdd(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	l := newMvLAN(t, false)
	list := l.list(t, "1.0.0", map[string]any{"hostShim": true})
	c := l.attach(t, list)
	state := l.stateFiles(t)
	_, err := l.cni.AddNetworkList(context.Background(), list, c.rt)
	if nettest.Code(err) != 4 {
		t.Fatalf("second ADD = %v, want code 4", err)
	}
	if got := l.stateFiles(t); strings.Join(got, ",") != strings.Join(state, ",") {
		t.Errorf("state %v -> %v", state, got)
	}
	if ips := l.storeIPs(t, list.Name); len(ips) != 2 { // the container's and the shim's
		t.Errorf("store = %v, want the first ADD's two entries", ips)
	}
	nettest.Reachable(t, l.host, c.addr(false))
	l.cni.MustDel(t, list, c.rt)
	if f := l.stateFiles(t); len(f) > 0 || len(l.storeIPs(t, list.Name)) > 0 {
		t.Errorf("left after DEL: state %v, store %v", f, l.storeIPs(t, list.Name))
	}
}

// TestMacvlanNetnsGone: the runtime removed the namespace before DEL (its
// path no longer exists): DEL still releases the address, the shim route
// and the records.
func TestMacvlanNetnsGone(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	l := newMvLAN(t, true)
	before := nettest.Snapshot(t, l.host)
	list := l.list(t, "1.1.0", map[string]any{"hostShim": true})
	c := l.attach(t, list)
	if err := c.ns.Remove(); err != nil {
		t.Fatal(err)
	}
	l.cni.MustDel(t, list, c.rt)
	l.cni.MustDel(t, list, c.rt)
	// The kernel frees the namespace, and the macvlan in it, a moment later.
	nettest.Eventually(t, 3*time.Second, "host back to its state before ADD", func() error {
		if after := nettest.Snapshot(t, l.host); after != before {
			return fmt.Errorf("host:\n%s", after)
		}
		return nil
	})
	l.assertClean(t, before, list.Name)
}
