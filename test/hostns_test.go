package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// hostnsNode is a test "host": a namespace with an uplink (up0, addresses,
// default routes via a gateway namespace), which hostns must report and
// never change.
type hostnsNode struct {
	host, gw *nettest.NS
	cni      *nettest.CNI
}

func newHostnsNode(t *testing.T) *hostnsNode {
	t.Helper()
	n := &hostnsNode{host: nettest.NewNS(t), gw: nettest.NewNS(t)}
	nettest.NewVeth(t, n.host, "up0", "192.0.2.10/24", n.gw, "gw0", "192.0.2.1/24")
	nettest.AddAddr(t, n.host, "up0", "2001:db8::10/64")
	nettest.AddAddr(t, n.gw, "gw0", "2001:db8::1/64")
	nettest.AddRoute(t, n.host, "default", "192.0.2.1")
	nettest.AddRoute(t, n.host, "default", "2001:db8::1")
	n.cni = nettest.NewCNI(t, n.host)
	return n
}

func hostnsList(t *testing.T, ver string, extra map[string]any) *libcni.NetworkConfigList {
	p := map[string]any{"type": "hostns", "allowHostNetwork": true, "capabilities": map[string]bool{"portMappings": true}}
	for k, v := range extra {
		p[k] = v
	}
	return nettest.ConfList(t, map[string]any{"cniVersion": ver, "name": "hostns-" + nettest.RandHex(6), "plugins": []any{p}})
}

func hnPorts(rt *libcni.RuntimeConf, ports ...int) *libcni.RuntimeConf {
	var pm []map[string]any
	for _, p := range ports {
		pm = append(pm, map[string]any{"hostPort": p, "containerPort": p, "protocol": "tcp"})
	}
	rt.CapabilityArgs = map[string]any{"portMappings": pm}
	return rt
}

// nsID is the identity of the namespace path shows now.
func hnNSID(t *testing.T, path string) netns.ID {
	t.Helper()
	id, err := netns.IDOf(path)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// stateFiles lists what plugins left in a state dir, without the
// bookkeeping that exists regardless (boot ID, locks).
func hnStateFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		rel, _ := filepath.Rel(dir, p)
		if err != nil || d.IsDir() || rel == "boot_id" || strings.HasPrefix(rel, "locks/") {
			return nil
		}
		out = append(out, rel)
		return nil
	})
	return out
}

func TestHostnsLifecycle(t *testing.T) {
	nettest.RequireRoot(t)
	for i, ver := range cniplugin.SupportedVersions {
		t.Run(ver, func(t *testing.T) {
			t.Parallel()
			n := newHostnsNode(t)
			cont := nettest.NewNS(t)
			list := hostnsList(t, ver, nil)
			rt := nettest.Runtime(t, cont, "eth0")
			before := nettest.HostState(t, n.host)

			res, err := current.NewResultFromResult(n.cni.MustAdd(t, list, rt))
			if err != nil {
				t.Fatal(err)
			}
			if got := hnNSID(t, cont.Path()); got != n.host.Handle().ID() {
				t.Fatalf("%s shows namespace %v after ADD, want the host's %v", cont.Path(), got, n.host.Handle().ID())
			}
			// A container started on the path sees the host's links and
			// shares its port space: a server there answers on the host's
			// loopback.
			joined := nettest.Enter(t, cont.Path())
			if !nettest.HasLink(t, joined, "up0") {
				t.Errorf("links through %s = %v, want the host's up0", cont.Path(), nettest.LinkNames(t, joined))
			}
			port := 20000 + i
			nettest.Listen(t, joined, "tcp", fmt.Sprintf("127.0.0.1:%d", port), "hostns")
			got, err := nettest.Dial(n.host, "tcp", fmt.Sprintf("127.0.0.1:%d", port), 2*time.Second)
			if err != nil || !strings.HasPrefix(got, "hostns ") {
				t.Errorf("server through the re-bound path, dialled on the host's loopback: %q, %v", got, err)
			}
			checkHostnsResult(t, ver, res, nettest.Link(t, n.host, "up0").Attrs().HardwareAddr.String(), cont.Path())

			if atLeast(ver, "0.4.0") {
				n.cni.MustCheck(t, list, rt)
			}
			if atLeast(ver, "1.1.0") {
				if err := n.cni.GetStatusNetworkList(context.Background(), list); err != nil {
					t.Errorf("STATUS: %v", err)
				}
				valid := &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: rt.ContainerID, IfName: "eth0"}}}
				if err := n.cni.GCNetworkList(context.Background(), list, valid); err != nil {
					t.Errorf("GC: %v", err)
				}
				n.cni.MustCheck(t, list, rt)
			}
			for range 2 {
				n.cni.MustDel(t, list, rt)
			}
			rt.NetNS = ""
			n.cni.MustDel(t, list, rt) // containerd's second DEL: no netns, no prevResult
			if after := nettest.HostState(t, n.host); after != before {
				t.Errorf("host changed by ADD/DEL:\nbefore\n%s\nafter\n%s", before, after)
			}
			if f := hnStateFiles(t, n.cni.StateDir); len(f) != 0 {
				t.Errorf("state left after DEL: %v", f)
			}
		})
	}
}

// checkHostnsResult checks the shape runtimes need: the host's main
// interface with its MAC in the sandbox, its addresses with an index
// (Podman) and, since it is not called eth0, again without one (containerd
// files those under eth0).
func checkHostnsResult(t *testing.T, ver string, res *current.Result, mac, sandbox string) {
	t.Helper()
	var ips []string
	for _, ip := range res.IPs {
		idx := "-"
		if ip.Interface != nil {
			idx = fmt.Sprint(*ip.Interface)
		}
		ips = append(ips, fmt.Sprintf("%s@%s gw=%s", ip.Address.String(), idx, ip.Gateway))
	}
	want := "192.0.2.10/24@0 gw=192.0.2.1,2001:db8::10/64@0 gw=2001:db8::1,192.0.2.10/24@- gw=192.0.2.1,2001:db8::10/64@- gw=2001:db8::1"
	if !atLeast(ver, "0.3.0") {
		// 0.1.0/0.2.0 carry one address per family and no interfaces.
		want = "192.0.2.10/24@- gw=192.0.2.1,2001:db8::10/64@- gw=2001:db8::1"
	}
	if got := strings.Join(ips, ","); got != want {
		t.Errorf("result IPs = %s, want %s", got, want)
	}
	if atLeast(ver, "0.3.0") {
		if len(res.Interfaces) != 1 || res.Interfaces[0].Name != "up0" || res.Interfaces[0].Mac != mac || res.Interfaces[0].Sandbox != sandbox {
			t.Errorf("result interfaces = %v, want up0 with %s in %s", res.Interfaces, mac, sandbox)
		}
	}
}

// TestHostnsPorts: a port reserved by one attachment and a port a host
// process listens on are refused to another with 101, and nothing
// changes; DEL releases the reservation; GC drops what is not valid.
func TestHostnsPorts(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	n := newHostnsNode(t)
	list := hostnsList(t, "1.1.0", nil)
	a, b, c := nettest.NewNS(t), nettest.NewNS(t), nettest.NewNS(t)
	rtA := hnPorts(nettest.Runtime(t, a, "eth0"), 18080, 18081)
	n.cni.MustAdd(t, list, rtA)
	n.cni.MustCheck(t, list, rtA)

	// Another network of the same host shares the store: the overlap is
	// host-wide.
	other := hostnsList(t, "1.1.0", nil)
	bID := hnNSID(t, b.Path())
	files := hnStateFiles(t, n.cni.StateDir)
	rtB := hnPorts(nettest.Runtime(t, b, "eth0"), 18090, 18081)
	_, err := n.cni.AddNetworkList(context.Background(), other, rtB)
	hnWantCode(t, err, 101, "tcp port 18081", rtA.ContainerID)
	if hnNSID(t, b.Path()) != bID {
		t.Error("a refused ADD re-bound the namespace")
	}
	if got := hnStateFiles(t, n.cni.StateDir); strings.Join(got, " ") != strings.Join(files, " ") {
		t.Errorf("a refused ADD changed the state: %v -> %v", files, got)
	}
	n.cni.MustDel(t, other, rtB) // the runtime's DEL after a failed ADD

	// A host process listening is found by the probe, and named.
	nettest.Listen(t, n.host, "tcp", "[::]:18095", "busy")
	rtC := hnPorts(nettest.Runtime(t, c, "eth0"), 18095)
	_, err = n.cni.AddNetworkList(context.Background(), list, rtC)
	hnWantCode(t, err, 101, "tcp port 18095", fmt.Sprintf("(pid %d)", os.Getpid()))
	if hnNSID(t, c.Path()) == n.host.Handle().ID() {
		t.Error("a refused ADD re-bound the namespace")
	}

	// DEL releases: the port can be reserved again.
	n.cni.MustDel(t, list, rtA)
	n.cni.MustAdd(t, other, rtB)
	n.cni.MustCheck(t, other, rtB)

	// GC with nothing valid drops the reservation; CHECK then says so.
	if err := n.cni.GCNetworkList(context.Background(), other, &libcni.GCArgs{}); err != nil {
		t.Fatal(err)
	}
	err = n.cni.CheckNetworkList(context.Background(), other, rtB)
	if err == nil || !strings.Contains(err.Error(), "no longer reserved") {
		t.Errorf("CHECK after GC = %v, want 'no longer reserved'", err)
	}
	n.cni.MustDel(t, other, rtB)
	if f := hnStateFiles(t, n.cni.StateDir); len(f) != 0 {
		t.Errorf("state left: %v", f)
	}
}

func hnWantCode(t *testing.T, err error, code uint, says ...string) {
	t.Helper()
	if got := nettest.Code(err); got != code {
		t.Fatalf("err = %v (code %d), want code %d", err, got, code)
	}
	for _, s := range says {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
}

// TestHostnsRefusals: each refused ADD returns its code and a reason,
// and changes nothing: not the namespace, not the host, not the state.
func TestHostnsRefusals(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	n := newHostnsNode(t)
	configured, peer, busy, procNS := nettest.NewNS(t), nettest.NewNS(t), nettest.NewNS(t), nettest.NewNS(t)
	nettest.NewVeth(t, configured, "eth0", "10.9.0.2/24", peer, "p0", "")
	sleeper := func(ns *nettest.NS) *exec.Cmd {
		var cmd *exec.Cmd
		ns.MustDo(t, func() error { cmd = exec.Command("sleep", "60"); return cmd.Start() })
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	sleeper(busy)
	proc := fmt.Sprintf("/proc/%d/ns/net", sleeper(procNS).Process.Pid)
	plain := filepath.Join(t.TempDir(), "plain")
	os.WriteFile(plain, nil, 0o644)
	fresh := nettest.NewNS(t)
	cases := []struct {
		name string
		list *libcni.NetworkConfigList
		rt   *libcni.RuntimeConf
		code uint
		says string
	}{
		{"no opt-in", hostnsList(t, "1.0.0", map[string]any{"allowHostNetwork": false}), nettest.Runtime(t, fresh, "eth0"), 7, "allowHostNetwork"},
		{"opt-in not a bool", hostnsList(t, "1.0.0", map[string]any{"allowHostNetwork": "yes"}), nettest.Runtime(t, fresh, "eth0"), 7, "allowHostNetwork"},
		{"bad port", hostnsList(t, "1.0.0", nil), hnPorts(nettest.Runtime(t, fresh, "eth0"), 70000), 7, "hostPort"},
		{"nerdctl proc path", hostnsList(t, "1.0.0", nil), &libcni.RuntimeConf{ContainerID: "c1", NetNS: proc, IfName: "eth0"}, 103, "nerdctl"},
		{"configured namespace", hostnsList(t, "1.0.0", nil), nettest.Runtime(t, configured, "eth0"), 103, "eth0 (veth)"},
		{"namespace with a process", hostnsList(t, "1.0.0", nil), nettest.Runtime(t, busy, "eth0"), 103, "sleep (pid"},
		{"not a namespace", hostnsList(t, "1.0.0", nil), &libcni.RuntimeConf{ContainerID: "c2", NetNS: plain, IfName: "eth0"}, 103, "not a network namespace"},
		{"missing path", hostnsList(t, "1.0.0", nil), &libcni.RuntimeConf{ContainerID: "c3", NetNS: "/run/netns/nd-gone-" + nettest.RandHex(6), IfName: "eth0"}, 103, "does not exist"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := nettest.HostState(t, n.host)
			var id netns.ID
			if !strings.HasPrefix(tc.rt.NetNS, "/run/netns/nd-gone") && tc.rt.NetNS != plain {
				id = hnNSID(t, tc.rt.NetNS)
			}
			_, err := n.cni.AddNetworkList(context.Background(), tc.list, tc.rt)
			hnWantCode(t, err, tc.code, tc.says)
			if id != (netns.ID{}) && hnNSID(t, tc.rt.NetNS) != id {
				t.Errorf("%s was re-bound by a refused ADD", tc.rt.NetNS)
			}
			if after := nettest.HostState(t, n.host); after != before {
				t.Errorf("host changed:\n%s\n->\n%s", before, after)
			}
			if f := hnStateFiles(t, n.cni.StateDir); len(f) != 0 {
				t.Errorf("state left: %v", f)
			}
			n.cni.MustDel(t, tc.list, tc.rt) // DEL after a failed ADD succeeds
		})
	}
}

// TestHostnsAlreadyHost: CNI_NETNS that already is the host's namespace
// (the host's own pin, or /proc/<pid>/ns/net of a host process) is only
// reported, with one JSON document and exit 0 on ADD and DEL.
func TestHostnsAlreadyHost(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	n := newHostnsNode(t)
	list := hostnsList(t, "1.1.0", nil)
	var cmd *exec.Cmd
	n.host.MustDo(t, func() error { cmd = exec.Command("sleep", "60"); return cmd.Start() })
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for _, path := range []string{n.host.Path(), fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)} {
		before := nettest.HostState(t, n.host)
		rt := &libcni.RuntimeConf{ContainerID: nettest.ID(t), NetNS: path, IfName: "eth0"}
		res, err := current.NewResultFromResult(n.cni.MustAdd(t, list, rt))
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Interfaces) != 1 || res.Interfaces[0].Name != "up0" {
			t.Errorf("%s: result interfaces = %v, want up0", path, res.Interfaces)
		}
		n.cni.MustCheck(t, list, rt)
		n.cni.MustDel(t, list, rt)
		n.cni.MustDel(t, list, rt)
		if after := nettest.HostState(t, n.host); after != before {
			t.Errorf("%s: host changed:\n%s\n->\n%s", path, before, after)
		}
	}
	for _, c := range n.cni.Calls() {
		if c.Err != nil {
			t.Errorf("%s exited with %v", c.Verb, c.Err)
		}
	}
	// CHECK of a namespace that is not the host's says so.
	other, fresh := nettest.NewNS(t), nettest.NewNS(t)
	rt := nettest.Runtime(t, other, "eth0")
	n.cni.MustAdd(t, list, rt)
	rt.NetNS = fresh.Path()
	err := n.cni.CheckNetworkList(context.Background(), list, rt)
	if err == nil || !strings.Contains(err.Error(), "not the host's") {
		t.Errorf("CHECK of a namespace that is not the host's = %v", err)
	}
}

// TestHostnsParallelPorts: many ADDs race for one host port; the store's
// lock lets exactly one win, the others get 101 and stay unbound. Distinct
// ports all succeed in parallel.
func TestHostnsParallelPorts(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	n := newHostnsNode(t)
	list := hostnsList(t, "1.1.0", nil)
	const N = 8
	type attempt struct {
		rt  *libcni.RuntimeConf
		err error
	}
	run := func(port func(i int) int) []attempt {
		out := make([]attempt, N)
		done := make(chan int)
		for i := range N {
			out[i].rt = hnPorts(nettest.Runtime(t, nettest.NewNS(t), "eth0"), port(i))
			go func() {
				_, out[i].err = n.cni.AddNetworkList(context.Background(), list, out[i].rt)
				done <- i
			}()
		}
		for range N {
			<-done
		}
		return out
	}
	won := 0
	for _, a := range run(func(int) int { return 18500 }) {
		switch {
		case a.err == nil:
			won++
			if hnNSID(t, a.rt.NetNS) != n.host.Handle().ID() {
				t.Errorf("the winner %s was not re-bound", a.rt.NetNS)
			}
			n.cni.MustDel(t, list, a.rt)
		case nettest.Code(a.err) == 101:
			if hnNSID(t, a.rt.NetNS) == n.host.Handle().ID() {
				t.Errorf("a loser (%v) was re-bound", a.err)
			}
		default:
			t.Errorf("ADD: %v, want success or 101", a.err)
		}
	}
	if won != 1 {
		t.Errorf("%d ADDs won host port 18500, want exactly 1", won)
	}
	for _, a := range run(func(i int) int { return 18600 + i }) {
		if a.err != nil {
			t.Errorf("ADD with a distinct port: %v", a.err)
			continue
		}
		n.cni.MustCheck(t, list, a.rt)
		n.cni.MustDel(t, list, a.rt)
	}
	if f := hnStateFiles(t, n.cni.StateDir); len(f) != 0 {
		t.Errorf("state left: %v", f)
	}
}
