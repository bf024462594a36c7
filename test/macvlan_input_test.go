package test

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// TestMacvlanBadInput: every bad config or environment gets its code and
// a message naming the problem, and leaves nothing: no link in the host
// or the container, no address held, no state.
func TestMacvlanBadInput(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	l := newMvLAN(t, true)
	held := l.list(t, "1.0.0", nil)
	holder := l.attach(t, held) // holds an address to collide with
	heldIP := holder.addr(false)
	holderMAC := holder.res.Interfaces[0].Mac
	cases := mvBadCases(l, heldIP, holderMAC)
	// CNI_IFNAME already taken in the container: refused, and the link
	// that is there is not touched.
	busy := nettest.NewNS(t)
	nettest.NewVeth(t, busy, "eth0", "198.51.100.9/24", nettest.NewNS(t), "x", "")

	conf := l.mvPlugin(nil)
	conf["cniVersion"], conf["name"] = "1.0.0", "mv-busy"
	_, err := l.execMv(t, "ADD", conf, &container{ns: busy, rt: nettest.Runtime(t, nil, "eth0")})
	if nettest.Code(err) != 4 || !strings.Contains(err.Error(), "eth0") {
		t.Errorf("ADD onto an existing eth0 = %v, want code 4 naming it", err)
	}
	if got := nettest.Addrs(t, busy, "eth0"); nettest.Link(t, busy, "eth0").Type() != "veth" ||
		len(got) != 1 || got[0].String() != "198.51.100.9/24" || len(l.storeIPs(t, "mv-busy")) > 0 {
		t.Errorf("a refused ADD changed the existing eth0 (%v) or kept an address", got)
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conf := l.mvPlugin(tc.extra)
			conf["cniVersion"], conf["name"] = "1.0.0", "mv-bad-"+nettest.RandHex(4)
			if strings.HasPrefix(tc.name, "duplicate") {
				conf["name"] = held.Name
			}
			beforeStore := l.storeIPs(t, conf["name"].(string))
			c := &container{ns: nettest.NewNS(t), rt: nettest.Runtime(t, nil, "eth0")}
			beforeHost, beforeCont := nettest.Snapshot(t, l.host), nettest.Snapshot(t, c.ns)
			beforeState := l.stateFiles(t)
			_, err := l.execMv(t, "ADD", conf, c, tc.env...)
			if got := nettest.Code(err); got != tc.code {
				t.Fatalf("code = %d (%v), want %d", got, err, tc.code)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if after := nettest.Snapshot(t, l.host); after != beforeHost {
				t.Errorf("host changed:\n%s\n->\n%s", beforeHost, after)
			}
			if after := nettest.Snapshot(t, c.ns); after != beforeCont {
				t.Errorf("container changed:\n%s\n->\n%s", beforeCont, after)
			}
			if ips := l.storeIPs(t, conf["name"].(string)); strings.Join(ips, ",") != strings.Join(beforeStore, ",") {
				t.Errorf("address store %v -> %v", beforeStore, ips)
			}
			if after := l.stateFiles(t); strings.Join(after, ",") != strings.Join(beforeState, ",") {
				t.Errorf("state files %v -> %v", beforeState, after)
			}
		})
	}
	// The collision left the holder alone.
	if got := l.storeIPs(t, held.Name); len(got) != 1 || got[0] != heldIP {
		t.Errorf("holder's store = %v, want [%s]", got, heldIP)
	}
	nettest.Reachable(t, holder.ns, mvOutIP)
	l.cni.MustDel(t, held, holder.rt)
}

// mvBadCase is one bad ADD: config changes, CNI_* env, code, and what the
// message must name.
type mvBadCase struct {
	name  string
	extra map[string]any
	env   []string
	code  uint
	want  []string
}

// mvBadCases: heldIP and holderMAC are another attachment's.
func mvBadCases(l *mvLAN, heldIP, holderMAC string) []mvBadCase {
	return []mvBadCase{
		{"missing master without default route", map[string]any{"master": nil}, nil, 7, []string{`"master"`, "default route"}},
		{"master does not exist", map[string]any{"master": "nosuch0"}, nil, 102, []string{"nosuch0"}},
		{"master not a name", map[string]any{"master": "a/b"}, nil, 7, []string{`"master"`}},
		{"bad mode", map[string]any{"mode": "bridg"}, nil, 7, []string{`"bridg"`, "bridge|private|vepa|passthru"}},
		{"mtu too large", map[string]any{"mtu": 9000}, nil, 7, []string{"9000", "1500", l.parent}},
		{"mtu below the kernel's minimum", map[string]any{"mtu": 50}, nil, 7, []string{`"mtu"`, "50", "68 up to"}},
		{"negative mtu", map[string]any{"mtu": -1}, nil, 7, []string{`"mtu"`}},
		{"mtu not a number", map[string]any{"mtu": "1500"}, nil, 7, []string{"mtu"}},
		{"bad mac", map[string]any{"mac": "zz:00"}, nil, 7, []string{"zz:00"}},
		{"multicast mac", map[string]any{"mac": "01:00:5e:00:00:01"}, nil, 7, []string{"multicast"}},
		{"duplicate static IP", nil, []string{"CNI_ARGS", "IP=" + heldIP}, 7, []string{heldIP}},
		{"static IP outside the range", nil, []string{"CNI_ARGS", "IP=198.51.100.7"}, 7, []string{"198.51.100.7"}},
		{"unknown CNI_ARGS", nil, []string{"CNI_ARGS", "FOO=1"}, 4, []string{"FOO"}},
		{"ipam plugin missing", map[string]any{"ipam": map[string]any{"type": "nosuch-ipam"}}, nil, 7, []string{"nosuch-ipam"}},
		{"hostShim in private mode", map[string]any{"hostShim": true, "mode": "private"}, nil, 7, []string{"hostShim", "bridge"}},
		{"hostShim without ipam", map[string]any{"hostShim": true, "ipam": map[string]any{}}, nil, 7, []string{"hostShim", "ipam"}},
		{"hostShimIP without hostShim", map[string]any{"hostShimIP": "192.0.2.9"}, nil, 7, []string{"hostShimIP"}},
		{"hostShimIP not an address", map[string]any{"hostShim": true, "hostShimIP": "nope"}, nil, 7, []string{"nope"}},
		{"hostShim with linkInContainer", map[string]any{"hostShim": true, "linkInContainer": true}, nil, 7, []string{"linkInContainer"}},
		{"hostShim with delegated ipam and no hostShimIP", map[string]any{"hostShim": true, "ipam": map[string]any{"type": "static"}},
			nil, 7, []string{"hostShimIP", "static"}},
		{"two hostShimIP of one family", map[string]any{"hostShim": true, "hostShimIP": []string{"192.0.2.8", "192.0.2.9"}},
			nil, 7, []string{"192.0.2.8", "192.0.2.9"}},
		{"hostShimIP inside the pool", map[string]any{"hostShim": true, "hostShimIP": "192.0.2.50"}, nil, 7, []string{"192.0.2.50", "192.0.2.10-192.0.2.200"}},
		{"mac in use on the parent", map[string]any{"mac": holderMAC}, nil, 7, []string{holderMAC, l.parent}},
	}
}

// TestMacvlanPoolExhausted: a full pool is an ADD error (100) and leaves
// nothing; STATUS stays fine.
func TestMacvlanPoolExhausted(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	l := newMvLAN(t, false)
	list := l.list(t, "1.1.0", map[string]any{"ipam": map[string]any{"rangeStart": "192.0.2.10", "rangeEnd": "192.0.2.10"}})
	a := l.attach(t, list)
	ns := nettest.NewNS(t)
	_, err := l.cni.AddNetworkList(context.Background(), list, nettest.Runtime(t, ns, "eth0"))
	if nettest.Code(err) != 100 {
		t.Fatalf("ADD on a full pool = %v, want code 100", err)
	}
	if nettest.HasLink(t, ns, "eth0") {
		t.Error("failed ADD left eth0 in the container")
	}
	if err := mvStatus(l, list); err != nil {
		t.Errorf("STATUS with a full pool = %v, want success", err)
	}
	l.cni.MustDel(t, list, a.rt)
}

// TestMacvlanStatus: STATUS fails with 50 when the master is missing or
// down and no container uses it, 51 when containers do (ADD accepts a
// down master: TestMacvlanMasterDown).
func TestMacvlanStatus(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	l := newMvLAN(t, false)
	list := l.list(t, "1.1.0", nil)
	if err := mvStatus(l, list); err != nil {
		t.Fatalf("STATUS: %v", err)
	}
	missing := l.list(t, "1.1.0", map[string]any{"master": "nosuch0"})
	if err := mvStatus(l, missing); nettest.Code(err) != 50 || !strings.Contains(err.Error(), "nosuch0") {
		t.Errorf("STATUS with a missing master = %v, want 50 naming it", err)
	}
	c := l.attach(t, list)
	l.host.MustRun(t, "ip", "link", "set", l.parent, "down")
	if err := mvStatus(l, list); nettest.Code(err) != 51 || !strings.Contains(err.Error(), "down") {
		t.Errorf("STATUS with the master down under a container = %v, want 51", err)
	}
	l.host.MustRun(t, "ip", "link", "set", l.parent, "up")
	if err := mvStatus(l, list); err != nil {
		t.Errorf("STATUS after the master came back: %v", err)
	}
	l.out.MustRun(t, "ip", "link", "set", "eth0", "down") // the cable is out
	if err := mvStatus(l, list); nettest.Code(err) != 51 || !strings.Contains(err.Error(), "carrier") {
		t.Errorf("STATUS with the master's carrier gone = %v, want 51", err)
	}
	l.out.MustRun(t, "ip", "link", "set", "eth0", "up")
	// The parent vanishes under the container: DEL still succeeds.
	l.host.MustRun(t, "ip", "link", "del", l.parent)
	l.cni.MustDel(t, list, c.rt)
	if f := l.stateFiles(t); len(f) > 0 || len(l.storeIPs(t, list.Name)) > 0 {
		t.Errorf("DEL after the parent vanished left state %v or addresses", f)
	}
	if err := mvStatus(l, list); nettest.Code(err) != 50 {
		t.Errorf("STATUS with the master gone and no container = %v, want 50", err)
	}
}

// TestMacvlanMasterDown: a master that exists but is down is accepted, as
// the reference does: ADD attaches (the container's link waits for the
// master) and CHECK passes, also when the master goes down later; traffic
// flows once it is up. A missing master stays code 102.
func TestMacvlanMasterDown(t *testing.T) {
	nettest.RequireRoot(t)
	for _, shim := range []bool{false, true} {
		t.Run(fmt.Sprintf("hostShim=%v", shim), func(t *testing.T) {
			t.Parallel()
			l := newMvLAN(t, false)
			list := l.list(t, "1.0.0", map[string]any{"hostShim": shim})
			l.host.MustRun(t, "ip", "link", "set", l.parent, "down")
			c := l.attach(t, list)
			if mv := mvLink(t, c.ns, "eth0"); mv.Flags&net.FlagUp == 0 {
				t.Error("eth0 is not up on a down master")
			}
			l.cni.MustCheck(t, list, c.rt)
			l.host.MustRun(t, "ip", "link", "set", l.parent, "up")
			nettest.Reachable(t, c.ns, mvOutIP)
			l.host.MustRun(t, "ip", "link", "set", l.parent, "down")
			l.cni.MustCheck(t, list, c.rt)
			l.cni.MustDel(t, list, c.rt)
			if f := l.stateFiles(t); len(f) > 0 || len(l.storeIPs(t, list.Name)) > 0 {
				t.Errorf("left after DEL: state %v, store %v", f, l.storeIPs(t, list.Name))
			}
		})
	}
}

// TestMacvlanOptions: mtu, bcqueuelen, mac (with the reference's
// precedence) and IPAM routes reach the kernel, and CHECK verifies the
// routes but, as the reference, not the MTU.
func TestMacvlanOptions(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	l := newMvLAN(t, false)
	list := l.list(t, "1.0.0", map[string]any{"mtu": 1400, "bcqueuelen": 100, "mac": "02:00:00:00:01:01",
		"capabilities": map[string]bool{"mac": true},
		"ipam": map[string]any{"gateway": mvOutIP, "routes": []any{
			map[string]any{"dst": "0.0.0.0/0"}, map[string]any{"dst": "198.51.100.0/24", "gw": "192.0.2.253"}}}})
	c := l.attach(t, list)
	mv := mvLink(t, c.ns, "eth0")
	if mv.MTU != 1400 || mv.BCQueueLen != 100 || mv.HardwareAddr.String() != "02:00:00:00:01:01" {
		t.Errorf("link: mtu %d bcqueuelen %d mac %s, want 1400 100 02:00:00:00:01:01", mv.MTU, mv.BCQueueLen, mv.HardwareAddr)
	}
	routes := c.ns.MustRun(t, "ip", "route")
	for _, want := range []string{"default via " + mvOutIP, "198.51.100.0/24 via 192.0.2.253"} {
		if !strings.Contains(routes, want) {
			t.Errorf("routes %q lack %q", routes, want)
		}
	}
	l.cni.MustCheck(t, list, c.rt)
	// A later chained plugin (tuning) may change the MTU: prevResult has
	// none, and the reference does not compare it.
	c.ns.MustRun(t, "ip", "link", "set", "eth0", "mtu", "1300")
	l.cni.MustCheck(t, list, c.rt)
	c.ns.MustRun(t, "ip", "route", "del", "198.51.100.0/24")
	if err := l.cni.CheckNetworkList(context.Background(), list, c.rt); err == nil || !strings.Contains(err.Error(), "198.51.100.0/24") {
		t.Errorf("CHECK with an IPAM route gone = %v, want an error naming it", err)
	}
	l.cni.MustDel(t, list, c.rt)

	// MAC precedence: config < CNI_ARGS MAC < args.cni.mac < runtimeConfig.mac.
	for _, tc := range []struct {
		name string
		conf map[string]any
		env  []string
		want string
	}{
		{"config", map[string]any{"mac": "02:00:00:00:02:01"}, nil, "02:00:00:00:02:01"},
		{"CNI_ARGS", map[string]any{"mac": "02:00:00:00:02:01"}, []string{"CNI_ARGS", "MAC=02:00:00:00:02:02"}, "02:00:00:00:02:02"},
		{"args", map[string]any{"mac": "02:00:00:00:02:01", "args": map[string]any{"cni": map[string]any{"mac": "02:00:00:00:02:03"}}},
			[]string{"CNI_ARGS", "MAC=02:00:00:00:02:02"}, "02:00:00:00:02:03"},
		{"runtimeConfig", map[string]any{"mac": "02:00:00:00:02:01", "args": map[string]any{"cni": map[string]any{"mac": "02:00:00:00:02:03"}},
			"runtimeConfig": map[string]any{"mac": "02:00:00:00:02:04"}}, []string{"CNI_ARGS", "MAC=02:00:00:00:02:02"}, "02:00:00:00:02:04"},
	} {
		conf := l.mvPlugin(tc.conf)
		conf["cniVersion"], conf["name"] = "1.0.0", "mv-mac"
		c := &container{ns: nettest.NewNS(t), rt: nettest.Runtime(t, nil, "eth0")}
		if _, err := l.execMv(t, "ADD", conf, c, tc.env...); err != nil {
			t.Fatalf("%s: ADD: %v", tc.name, err)
		}
		if got := mvLink(t, c.ns, "eth0").HardwareAddr.String(); got != tc.want {
			t.Errorf("%s: MAC = %s, want %s", tc.name, got, tc.want)
		}
		if _, err := l.execMv(t, "DEL", conf, c, tc.env...); err != nil {
			t.Fatalf("%s: DEL: %v", tc.name, err)
		}
	}
}

// TestMacvlanCheckDetects: CHECK names what differs from prevResult and
// changes nothing.
func TestMacvlanCheckDetects(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	l := newMvLAN(t, false)
	list := l.list(t, "1.0.0", nil)
	c := l.attach(t, list)
	check := func(want string) {
		t.Helper()
		before := nettest.Snapshot(t, c.ns)
		err := l.cni.CheckNetworkList(context.Background(), list, c.rt)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CHECK = %v, want an error mentioning %q", err, want)
		}
		if after := nettest.Snapshot(t, c.ns); after != before {
			t.Error("CHECK changed the namespace")
		}
	}
	c.ns.MustRun(t, "ip", "addr", "flush", "dev", "eth0")
	check(c.addr(false))
	c.ns.MustRun(t, "ip", "link", "set", "eth0", "address", "02:00:00:00:03:03")
	check("02:00:00:00:03:03")
	c.ns.MustRun(t, "ip", "link", "del", "eth0")
	check("eth0")
	l.cni.MustDel(t, list, c.rt)
}

// TestMacvlanLinkInContainer: with linkInContainer the master lives in the
// container's namespace, as the reference allows (SR-IOV VFs moved in).
func TestMacvlanLinkInContainer(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	l := newMvLAN(t, false)
	cont, peer := nettest.NewNS(t), nettest.NewNS(t)
	nettest.NewVeth(t, cont, "vf0", "", peer, "vfpeer", "192.0.2.253/24")
	list := l.list(t, "1.0.0", map[string]any{"master": "vf0", "linkInContainer": true})
	before := nettest.Snapshot(t, l.host)
	rt := nettest.Runtime(t, cont, "net1")
	l.cni.MustAdd(t, list, rt)
	mv := mvLink(t, cont, "net1")
	if mv.ParentIndex != nettest.Link(t, cont, "vf0").Attrs().Index {
		t.Errorf("net1's parent index %d is not vf0's", mv.ParentIndex)
	}
	nettest.Reachable(t, cont, "192.0.2.253")
	l.cni.MustCheck(t, list, rt)
	l.cni.MustDel(t, list, rt)
	if nettest.HasLink(t, cont, "net1") || !nettest.HasLink(t, cont, "vf0") {
		t.Error("DEL must remove net1 and keep the master vf0")
	}
	l.assertClean(t, before, list.Name)
}

// TestMacvlanAnnounces: ADD announces the container on the segment (a
// gratuitous ARP and an unsolicited neighbour advertisement), so the
// outside host and the other macvlans of the parent learn its new MAC
// before any traffic, and has the kernel announce a later MAC change.
// Sent by the plugin itself, or, when the node's reaper runs (here
// started by a DEL just before), by the reaper.
func TestMacvlanAnnounces(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	for _, byReaper := range []bool{false, true} {
		t.Run(map[bool]string{false: "in the call", true: "by the reaper"}[byReaper], func(t *testing.T) {
			t.Parallel()
			testMacvlanAnnounces(t, byReaper)
		})
	}
}

func testMacvlanAnnounces(t *testing.T, byReaper bool) {
	l := newMvLAN(t, false)
	learns := func(ns *nettest.NS, link string) {
		ns.Sysctl(t, "net/ipv4/conf/"+link+"/arp_accept", "1")
		ns.Sysctl(t, "net/ipv6/conf/"+link+"/accept_untracked_na", "1") // taken from
		ns.Sysctl(t, "net/ipv6/conf/"+link+"/forwarding", "1")          // routers only
	}
	learns(l.out, "eth0")
	list := l.list(t, "1.0.0", map[string]any{"ipam": map[string]any{"subnet": nil, "rangeStart": nil, "rangeEnd": nil,
		"ranges": []any{
			[]any{map[string]any{"subnet": mvSubnet, "rangeStart": "192.0.2.30"}},
			[]any{map[string]any{"subnet": mvSubnet6, "rangeStart": "2001:db8:4::30"}}}}})
	sib := l.attach(t, list)
	learns(sib.ns, "eth0")
	if byReaper {
		tmp := l.attach(t, list)
		l.cni.MustDel(t, list, tmp.rt) // starts the reaper: it deletes tmp's link
		if !reaperListens(t, l.host) {
			t.Fatal("no reaper listens in the host namespace after a DEL")
		}
	}
	c := l.attach(t, list)
	mac := c.res.Interfaces[0].Mac
	for _, who := range []struct {
		name string
		ns   *nettest.NS
	}{{"the outside host", l.out}, {"the sibling macvlan", sib.ns}} {
		for _, ip := range []string{c.addr(false), c.addr(true)} {
			nettest.Eventually(t, 3*time.Second, who.name+" learns "+ip, func() error {
				if !hasNeigh(t, who.ns, ip, mac) {
					return fmt.Errorf("no neighbour entry %s -> %s", ip, mac)
				}
				return nil
			})
		}
	}
	nettest.Reachable(t, c.ns, mvOutIP6)
	// A later MAC change (a chained tuning "mac") is announced by the
	// kernel too: ndisc_notify, as the reference sets it.
	nettest.Eventually(t, 3*time.Second, "ndisc_notify", func() error {
		if got := c.ns.ReadSysctl(t, "net/ipv6/conf/eth0/ndisc_notify"); got != "1" {
			return fmt.Errorf("ndisc_notify = %s, want 1", got)
		}
		return nil
	})
	c.ns.MustRun(t, "ip", "link", "set", "eth0", "address", "02:00:00:00:77:77")
	nettest.Eventually(t, 3*time.Second, "outside host learns the new MAC of "+c.addr(true), func() error {
		if !hasNeigh(t, l.out, c.addr(true), "02:00:00:00:77:77") {
			return fmt.Errorf("no neighbour entry %s -> 02:00:00:00:77:77", c.addr(true))
		}
		return nil
	})
	l.cni.MustDel(t, list, c.rt)
	l.cni.MustDel(t, list, sib.rt)
}

// TestMacvlanHandsAnnouncementOver: with a reaper listening in the node
// namespace, ADD hands it the announcement (the link's index, name and
// addresses, and the container's namespace) and sends none itself.
func TestMacvlanHandsAnnouncementOver(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	l := newMvLAN(t, false)
	list := l.list(t, "1.0.0", map[string]any{"ipam": map[string]any{"subnet": nil, "rangeStart": nil, "rangeEnd": nil,
		"ranges": []any{
			[]any{map[string]any{"subnet": mvSubnet, "rangeStart": "192.0.2.30"}},
			[]any{map[string]any{"subnet": mvSubnet6, "rangeStart": "2001:db8:4::30"}}}}})
	var ln *net.UnixListener
	l.host.MustDo(t, func() (err error) {
		ln, err = net.ListenUnix("unixpacket", &net.UnixAddr{Name: "@netdrivers-link-reaper", Net: "unixpacket"})
		return err
	})
	t.Cleanup(func() { ln.Close() })
	got := make(chan string, 1)
	go func() { // a stand-in reaper: takes one request and acknowledges it
		c, err := ln.AcceptUnix()
		ln.Close() // DEL deletes for itself
		if err != nil {
			return
		}
		defer c.Close()
		buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4))
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if err != nil {
			got <- err.Error()
			return
		}
		var fds []int
		if cms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil && len(cms) == 1 {
			fds, _ = unix.ParseUnixRights(&cms[0])
		}
		for _, fd := range fds {
			unix.Close(fd)
		}
		c.Write([]byte{'k'})
		got <- fmt.Sprintf("%s, %d fd", buf[:n], len(fds))
	}()
	c := l.attach(t, list)
	want := fmt.Sprintf("announce %d eth0 %s %s, 1 fd", nettest.Link(t, c.ns, "eth0").Attrs().Index, c.addr(false), c.addr(true))
	select {
	case s := <-got:
		if s != want {
			t.Errorf("the reaper was handed %q, want %q", s, want)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("ADD handed nothing to the listening reaper")
	}
	// Announcing sets arp_notify: the plugin did not.
	if got := c.ns.ReadSysctl(t, "net/ipv4/conf/eth0/arp_notify"); got != "0" {
		t.Errorf("arp_notify = %s after a handed-over announcement: ADD announced too", got)
	}
	l.cni.MustDel(t, list, c.rt)
}

// reaperListens reports whether the node's link reaper listens in ns.
func reaperListens(t *testing.T, ns *nettest.NS) bool {
	t.Helper()
	var b []byte
	ns.MustDo(t, func() (err error) {
		b, err = os.ReadFile("/proc/thread-self/net/unix") // /proc/net is the main thread's
		return err
	})
	return strings.Contains(string(b), "@netdrivers-link-reaper")
}

// TestMacvlanDAD: with enabledad the container's IPv6 address goes through
// duplicate address detection (ADD waits for it); by default it does not.
func TestMacvlanDAD(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	l := newMvLAN(t, false)
	for _, dad := range []bool{false, true} {
		list := l.list(t, "1.0.0", map[string]any{"enabledad": dad, "ipam": map[string]any{"subnet": mvSubnet6, "rangeStart": nil, "rangeEnd": nil}})
		c := l.attach(t, list)
		addrs, err := c.ns.NL(t).AddrList(nettest.Link(t, c.ns, "eth0"), netlink.FAMILY_V6)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range addrs {
			if !a.IP.IsGlobalUnicast() {
				continue
			}
			if nodad := a.Flags&unix.IFA_F_NODAD != 0; nodad == dad {
				t.Errorf("enabledad=%v: %s has nodad=%v", dad, a.IPNet, nodad)
			}
			if a.Flags&unix.IFA_F_TENTATIVE != 0 {
				t.Errorf("enabledad=%v: %s still tentative after ADD", dad, a.IPNet)
			}
		}
		nettest.Reachable(t, c.ns, mvOutIP6)
		l.cni.MustDel(t, list, c.rt)
	}
}

// TestMacvlanUnreportableResult: an L2-only attachment at cniVersion 0.2.0
// or 0.1.0 makes a result those versions cannot carry (no address): ADD
// fails with code 1 and takes the link and its records back.
func TestMacvlanUnreportableResult(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	l := newMvLAN(t, false)
	before := nettest.Snapshot(t, l.host)
	for _, ver := range []string{"0.2.0", "0.1.0"} {
		ns := nettest.NewNS(t)
		c := &container{ns: ns, rt: nettest.Runtime(t, ns, "eth0")}
		conf := map[string]any{"cniVersion": ver, "name": "mv-l2old", "type": "macvlan", "master": l.parent}
		if _, err := l.execMv(t, "ADD", conf, c); nettest.Code(err) != 1 {
			t.Errorf("%s: ADD = %v, want code 1", ver, err)
		}
		if nettest.HasLink(t, ns, "eth0") {
			t.Errorf("%s: the failed ADD left eth0 in the container", ver)
		}
		l.assertClean(t, before, "mv-l2old")
	}
}
