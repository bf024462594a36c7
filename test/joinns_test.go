package test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// joinnsNode is a test host with a target container X (eth0 10.99.0.2/24,
// default route via a "lan" namespace that also plays another container).
type joinnsNode struct {
	host, x, lan *nettest.NS
	cni          *nettest.CNI
}

func newJoinnsNode(t *testing.T) *joinnsNode {
	t.Helper()
	n := &joinnsNode{host: nettest.NewNS(t), x: nettest.NewNS(t), lan: nettest.NewNS(t)}
	nettest.NewVeth(t, n.x, "eth0", "10.99.0.2/24", n.lan, "lan0", "10.99.0.1/24")
	nettest.AddRoute(t, n.x, "default", "10.99.0.1")
	n.cni = nettest.NewCNI(t, n.host)
	return n
}

func joinnsList(t *testing.T, ver string, conf map[string]any) *libcni.NetworkConfigList {
	p := map[string]any{"type": "joinns", "capabilities": map[string]bool{"io.kubernetes.cri.pod-annotations": true, "portMappings": true}}
	for k, v := range conf {
		p[k] = v
	}
	return nettest.ConfList(t, map[string]any{"cniVersion": ver, "name": "joinns-" + nettest.RandHex(6), "plugins": []any{p}})
}

func TestJoinnsLifecycle(t *testing.T) {
	nettest.RequireRoot(t)
	for i, ver := range cniplugin.SupportedVersions {
		t.Run(ver, func(t *testing.T) {
			t.Parallel()
			n := newJoinnsNode(t)
			y := nettest.NewNS(t)
			list := joinnsList(t, ver, map[string]any{"target": n.x.Path()})
			rt := nettest.Runtime(t, y, "eth0")
			hostBefore, xBefore := nettest.HostState(t, n.host), nettest.HostState(t, n.x)

			res, err := current.NewResultFromResult(n.cni.MustAdd(t, list, rt))
			if err != nil {
				t.Fatal(err)
			}
			if got := hnNSID(t, y.Path()); got != n.x.Handle().ID() {
				t.Fatalf("%s shows %v after ADD, want X's namespace %v", y.Path(), got, n.x.Handle().ID())
			}
			checkJoinnsResult(t, ver, res, nettest.Link(t, n.x, "eth0").Attrs().HardwareAddr.String(), y.Path())

			// Y's view is X's stack: a server started through Y is reached at
			// X's address from another container, and holds the port in X.
			joined := nettest.Enter(t, y.Path())
			port := 21000 + i
			nettest.Listen(t, joined, "tcp", fmt.Sprintf(":%d", port), "sidecar")
			got, err := nettest.Dial(n.lan, "tcp", fmt.Sprintf("10.99.0.2:%d", port), 2*time.Second)
			if err != nil || !strings.HasPrefix(got, "sidecar ") {
				t.Errorf("server through Y dialled at X's address: %q, %v", got, err)
			}
			n.x.MustDo(t, func() error {
				l, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
				if err == nil {
					l.Close()
					t.Errorf("port %d bound through Y is free in X: not the same port space", port)
				} else if !errors.Is(err, syscall.EADDRINUSE) {
					t.Errorf("listen in X: %v, want EADDRINUSE", err)
				}
				return nil
			})
			if atLeast(ver, "0.4.0") {
				n.cni.MustCheck(t, list, rt)
			}
			if atLeast(ver, "1.1.0") {
				if err := n.cni.GetStatusNetworkList(context.Background(), list); err != nil {
					t.Errorf("STATUS: %v", err)
				}
			}
			for range 2 {
				n.cni.MustDel(t, list, rt)
			}
			rt.NetNS = ""
			n.cni.MustDel(t, list, rt)
			// X is untouched and keeps working for its own container.
			if after := nettest.HostState(t, n.x); after != xBefore {
				t.Errorf("X changed:\n%s\n->\n%s", xBefore, after)
			}
			if after := nettest.HostState(t, n.host); after != hostBefore {
				t.Errorf("host changed:\n%s\n->\n%s", hostBefore, after)
			}
			nettest.Reachable(t, n.lan, "10.99.0.2")
			if f := hnStateFiles(t, n.cni.StateDir); len(f) != 0 {
				t.Errorf("state left after DEL: %v", f)
			}
		})
	}
}

// checkJoinnsResult: X's eth0 with its MAC, in Y's sandbox, X's address
// and default route. eth0 exists, so no index-less copies are needed.
func checkJoinnsResult(t *testing.T, ver string, res *current.Result, mac, sandbox string) {
	t.Helper()
	var ips, routes []string
	for _, ip := range res.IPs {
		idx := "-"
		if ip.Interface != nil {
			idx = fmt.Sprint(*ip.Interface)
		}
		ips = append(ips, fmt.Sprintf("%s@%s gw=%s", ip.Address.String(), idx, ip.Gateway))
	}
	for _, r := range res.Routes {
		routes = append(routes, fmt.Sprintf("%s via %s", r.Dst.String(), r.GW))
	}
	idx := "0"
	if !atLeast(ver, "0.3.0") {
		idx = "-"
	}
	if got, want := strings.Join(ips, ","), "10.99.0.2/24@"+idx+" gw=10.99.0.1"; got != want {
		t.Errorf("result IPs = %s, want %s", got, want)
	}
	if got := strings.Join(routes, ","); got != "0.0.0.0/0 via 10.99.0.1" {
		t.Errorf("result routes = %s, want the default route via 10.99.0.1", got)
	}
	if atLeast(ver, "0.3.0") {
		if len(res.Interfaces) != 1 || res.Interfaces[0].Name != "eth0" || res.Interfaces[0].Mac != mac || res.Interfaces[0].Sandbox != sandbox {
			t.Errorf("result interfaces = %v, want eth0 %s in %s", res.Interfaces, mac, sandbox)
		}
	}
}

// TestJoinnsByContainerID names targets by container ID, per call, through
// the records every attachment leaves: Z joins Y (itself a joiner of X)
// with CNI_ARGS TARGET=, W with the pod annotation. When Y's attachment is
// gone, CHECK of Z says so.
func TestJoinnsByContainerID(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	n := newJoinnsNode(t)
	y, z, w := nettest.NewNS(t), nettest.NewNS(t), nettest.NewNS(t)
	byPath := joinnsList(t, "1.1.0", map[string]any{"target": n.x.Path()})
	rtY := nettest.Runtime(t, y, "eth0")
	n.cni.MustAdd(t, byPath, rtY)

	perCall := joinnsList(t, "1.1.0", map[string]any{"target": "/config/loses"})
	rtZ := nettest.Runtime(t, z, "eth0")
	rtZ.Args = [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", "z"}, {"TARGET", rtY.ContainerID}}
	n.cni.MustAdd(t, perCall, rtZ)
	rtW := nettest.Runtime(t, w, "eth0")
	rtW.CapabilityArgs = map[string]any{"io.kubernetes.cri.pod-annotations": map[string]string{"netdrivers.io/target": rtY.ContainerID, "other": "x"}}
	n.cni.MustAdd(t, perCall, rtW)
	for _, ns := range []*nettest.NS{z, w} {
		if hnNSID(t, ns.Path()) != n.x.Handle().ID() {
			t.Errorf("%s did not join X through Y's container ID", ns.Path())
		}
	}
	n.cni.MustCheck(t, perCall, rtZ)
	n.cni.MustCheck(t, perCall, rtW)

	n.cni.MustDel(t, byPath, rtY)
	err := n.cni.CheckNetworkList(context.Background(), perCall, rtZ)
	if err == nil || !strings.Contains(err.Error(), "gone") {
		t.Errorf("CHECK after the target's DEL = %v, want it to say the attachment is gone", err)
	}
	// X itself still serves its own container and the remaining joiners.
	nettest.Reachable(t, n.lan, "10.99.0.2")
	n.cni.MustDel(t, perCall, rtZ)
	n.cni.MustDel(t, perCall, rtW)
	if f := hnStateFiles(t, n.cni.StateDir); len(f) != 0 {
		t.Errorf("state left: %v", f)
	}
}

// TestJoinnsRefusals: each refused ADD has its code and reason and
// changes nothing: not CNI_NETNS, not the target, not the state.
func TestJoinnsRefusals(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	n := newJoinnsNode(t)
	fresh, configured, peer, procNS := nettest.NewNS(t), nettest.NewNS(t), nettest.NewNS(t), nettest.NewNS(t)
	nettest.NewVeth(t, configured, "eth0", "", peer, "p0", "")
	var cmd *exec.Cmd
	procNS.MustDo(t, func() error { cmd = exec.Command("sleep", "60"); return cmd.Start() })
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	proc := fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)
	x := map[string]any{"target": n.x.Path()}
	rt := func(ns *nettest.NS) *libcni.RuntimeConf { return nettest.Runtime(t, ns, "eth0") }
	self := rt(fresh)
	self.Args = [][2]string{{"TARGET", self.ContainerID}}
	both := rt(fresh)
	both.Args = [][2]string{{"TARGET", "/a"}}
	both.CapabilityArgs = map[string]any{"io.kubernetes.cri.pod-annotations": map[string]string{"netdrivers.io/target": "/b"}}
	cases := []struct {
		name string
		conf map[string]any
		rt   *libcni.RuntimeConf
		code uint
		says string
	}{
		{"no target", nil, rt(fresh), 7, "no target"},
		{"target not a namespace", map[string]any{"target": "/etc/hostname"}, rt(fresh), 8, "not a network namespace"},
		{"target missing", map[string]any{"target": "/run/netns/nd-none-" + nettest.RandHex(6)}, rt(fresh), 8, "does not exist"},
		{"unknown container", map[string]any{"target": "nosuchcontainer"}, rt(fresh), 8, "not attached on this node"},
		{"not a container ID", map[string]any{"target": "../x"}, rt(fresh), 7, "neither"},
		{"itself by path", map[string]any{"target": fresh.Path()}, rt(fresh), 7, "own CNI_NETNS"},
		{"itself by container ID", nil, self, 7, "itself"},
		{"host without opt-in", map[string]any{"target": n.host.Path()}, rt(fresh), 8, "allowHostNetwork"},
		{"TARGET and annotation disagree", nil, both, 7, "different targets"},
		{"portMappings", x, hnPorts(rt(fresh), 8080), 2, "portMappings"},
		{"nerdctl proc path", x, &libcni.RuntimeConf{ContainerID: "c1", NetNS: proc, IfName: "eth0"}, 103, "nerdctl"},
		{"configured CNI_NETNS", x, rt(configured), 103, "eth0 (veth)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			list := joinnsList(t, "1.1.0", tc.conf)
			id := hnNSID(t, tc.rt.NetNS)
			xBefore := nettest.HostState(t, n.x)
			_, err := n.cni.AddNetworkList(context.Background(), list, tc.rt)
			hnWantCode(t, err, tc.code, tc.says)
			if hnNSID(t, tc.rt.NetNS) != id {
				t.Errorf("%s re-bound by a refused ADD", tc.rt.NetNS)
			}
			if after := nettest.HostState(t, n.x); after != xBefore {
				t.Errorf("target changed:\n%s\n->\n%s", xBefore, after)
			}
			if f := hnStateFiles(t, n.cni.StateDir); len(f) != 0 {
				t.Errorf("state left: %v", f)
			}
			n.cni.MustDel(t, list, tc.rt)
		})
	}
}

// TestJoinnsHostWithOptIn: with allowHostNetwork the target may be the
// host's namespace (as Docker's container:X where X runs with --network
// host).
func TestJoinnsHostWithOptIn(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	n := newJoinnsNode(t)
	y := nettest.NewNS(t)
	list := joinnsList(t, "1.0.0", map[string]any{"target": n.host.Path(), "allowHostNetwork": true})
	rt := nettest.Runtime(t, y, "eth0")
	n.cni.MustAdd(t, list, rt)
	if hnNSID(t, y.Path()) != n.host.Handle().ID() {
		t.Fatal("Y did not join the host")
	}
	n.cni.MustCheck(t, list, rt)
	n.cni.MustDel(t, list, rt)
	n.cni.MustDel(t, list, rt)
}

// TestJoinnsBridgeTarget is issue 6's scenario: X is attached with
// host-local-bridge, Y joins X by its container ID (the record the bridge
// plugin leaves); Y's path shows X's eth0 and address, a server through Y
// is reached at X's address from another bridge container, a port bound
// through Y is taken in X; DEL of Y (twice) leaves X fully working; when
// X's attachment is gone, CHECK of a joiner says so.
func TestJoinnsBridgeTarget(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	host := nettest.NewNS(t)
	cni := nettest.NewCNI(t, host)
	br := nettest.ConfList(t, map[string]any{
		"cniVersion": "1.0.0", "name": "jbr-" + nettest.RandHex(6),
		"plugins": []any{map[string]any{"type": "host-local-bridge", "bridge": nettest.Name("ndj"),
			"ipam": map[string]any{"type": "host-local", "subnet": "10.123.0.0/24", "dataDir": t.TempDir()}}},
	})
	join := joinnsList(t, "1.0.0", nil)
	x, z, y := nettest.NewNS(t), nettest.NewNS(t), nettest.NewNS(t)
	rtX, rtZ := nettest.Runtime(t, x, "eth0"), nettest.Runtime(t, z, "eth0")
	resX, err := current.NewResultFromResult(cni.MustAdd(t, br, rtX))
	if err != nil {
		t.Fatal(err)
	}
	cni.MustAdd(t, br, rtZ)
	xAddr := resX.IPs[0].Address.IP.String()
	rtY := nettest.Runtime(t, y, "eth0")
	rtY.Args = [][2]string{{"IgnoreUnknown", "1"}, {"TARGET", rtX.ContainerID}}
	resY, err := current.NewResultFromResult(cni.MustAdd(t, join, rtY))
	if err != nil {
		t.Fatal(err)
	}
	if hnNSID(t, y.Path()) != x.Handle().ID() {
		t.Fatal("Y did not join X's namespace")
	}
	if len(resY.IPs) == 0 || resY.IPs[0].Address.String() != resX.IPs[0].Address.String() ||
		resY.Interfaces[0].Name != "eth0" || resY.Interfaces[0].Mac != nettest.Link(t, x, "eth0").Attrs().HardwareAddr.String() {
		t.Errorf("Y's result %v %v does not report X's eth0 and %s", resY.Interfaces, resY.IPs, resX.IPs[0].Address.String())
	}
	joined := nettest.Enter(t, y.Path())
	if got := nettest.Addrs(t, joined, "eth0"); len(got) != 1 || got[0].Addr().String() != xAddr {
		t.Errorf("eth0 through Y has %v, want X's %s", got, xAddr)
	}
	nettest.Listen(t, joined, "tcp", ":8088", "sidecar")
	nettest.Eventually(t, 3*time.Second, "dial the sidecar at X's address from Z", func() error {
		got, err := nettest.Dial(z, "tcp", net.JoinHostPort(xAddr, "8088"), time.Second)
		if err == nil && !strings.HasPrefix(got, "sidecar ") {
			err = fmt.Errorf("answer %q", got)
		}
		return err
	})
	x.MustDo(t, func() error {
		l, err := net.Listen("tcp", ":8088")
		if err == nil {
			l.Close()
			return errors.New("port 8088 bound through Y is free in X")
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return err
		}
		return nil
	})
	cni.MustCheck(t, join, rtY)

	xBefore := nettest.Snapshot(t, x)
	cni.MustDel(t, join, rtY)
	cni.MustDel(t, join, rtY)
	if after := nettest.Snapshot(t, x); after != xBefore {
		t.Errorf("DEL of Y changed X:\n%s\n->\n%s", xBefore, after)
	}
	// X keeps working for its own container: reachable, and serving.
	nettest.Reachable(t, z, xAddr)
	nettest.Listen(t, x, "tcp", ":8089", "x-itself")
	if got, err := nettest.Dial(z, "tcp", net.JoinHostPort(xAddr, "8089"), 2*time.Second); err != nil || !strings.HasPrefix(got, "x-itself ") {
		t.Errorf("X's own server after Y's DEL: %q, %v", got, err)
	}

	// A joiner outlives its target's attachment only as far as CHECK
	// telling so.
	w := nettest.NewNS(t)
	rtW := nettest.Runtime(t, w, "eth0")
	rtW.Args = rtY.Args
	cni.MustAdd(t, join, rtW)
	cni.MustDel(t, br, rtX)
	err = cni.CheckNetworkList(context.Background(), join, rtW)
	if err == nil || !strings.Contains(err.Error(), "gone") {
		t.Errorf("CHECK of a joiner after its target's DEL = %v, want it to say the attachment is gone", err)
	}
	cni.MustDel(t, join, rtW)
	cni.MustDel(t, br, rtZ)
}
