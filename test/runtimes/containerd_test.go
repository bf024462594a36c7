//go:build runtimes

package runtimes

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	rt "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/netdrivers/netdrivers/pkg/nettest"
	"github.com/netdrivers/netdrivers/test/runtimes/cri"
)

// Addresses of the containerd scenarios (the host namespace is private).
const (
	ctdUplink    = "10.213.100.1" // the node's address, towards "outside"
	ctdBridgeNet = "10.213.1.0/24"
	ctdBridgeV6  = "fd00:213:1::/64"
	ctdMacvlan   = "10.213.11.0/24"
	ctdLANPeer   = "10.213.11.254" // a machine on the macvlan parent's segment
	ctdHostPort  = 18080
)

// ctdEnv is the node containerd runs on, and its neighbours.
type ctdEnv struct {
	d       *containerd
	outside *nettest.NS // another machine, routed to the node
	lan     *nettest.NS // a machine on the macvlan parent's L2 segment
	ipamDir string
	cache0  map[string]bool // libcni's result cache before the run
}

// TestContainerd drives containerd's CRI as the kubelet does, one
// RuntimeClass (handler) per driver; the default handler carries
// host-local-bridge, as a node's only conflist would.
func TestContainerd(t *testing.T) {
	t.Parallel()
	e := &ctdEnv{outside: newNS(t), lan: newNS(t), cache0: cacheEntries()}
	host := newNS(t)
	nettest.NewVeth(t, host, "ndrt-up0", ctdUplink+"/24", e.outside, "ndrt-cl0", "10.213.100.2/24")
	nettest.AddRoute(t, e.outside, "default", ctdUplink)
	nettest.AddRoute(t, host, "default", "10.213.100.2") // a node has one; hostns reports its link
	nettest.NewVeth(t, host, "ndrt-mv0", "", e.lan, "ndrt-lan0", ctdLANPeer+"/24")
	e.ipamDir = dir(t, "containerd", "ipam")

	// The shipped conf-examples, with only private names, ranges and
	// stores (and the macvlan parent) set.
	def := example(t, "none", "nd-ctd-none", nil)
	if driverExists("host-local-bridge") {
		def = bridgeConf(t, "nd-ctd-bridge", "ndrt-br0", e.ipamDir, ctdBridgeNet, ctdBridgeV6)
	}
	handlers := map[string][]byte{"nd-none": example(t, "none", "nd-ctd-none", nil)}
	if driverExists("macvlan") {
		handlers["nd-macvlan"] = macvlanConf(t, "nd-ctd-macvlan", "ndrt-mv0", ctdMacvlan, e.ipamDir)
	}
	if driverExists("hostns") {
		handlers["nd-hostns"] = example(t, "hostns", "nd-ctd-host", nil)
	}
	if driverExists("joinns") {
		handlers["nd-joinns"] = example(t, "joinns", "nd-ctd-join", nil)
	}
	e.d = startContainerd(t, host, def, handlers)

	t.Run("host-local-bridge", func(t *testing.T) { requireDriver(t, "host-local-bridge"); e.bridge(t) })
	t.Run("host-local-bridge-parallel", func(t *testing.T) { requireDriver(t, "host-local-bridge"); e.bridgeParallel(t) })
	t.Run("host-local-bridge-port-conflict", func(t *testing.T) { requireDriver(t, "host-local-bridge"); e.bridgeConflict(t) })
	t.Run("macvlan", func(t *testing.T) { requireDriver(t, "macvlan"); e.macvlan(t) })
	t.Run("hostns", func(t *testing.T) { requireDriver(t, "hostns"); e.hostns(t) })
	t.Run("joinns", func(t *testing.T) { requireDriver(t, "joinns", "macvlan"); e.joinns(t) })
	t.Run("none", func(t *testing.T) { requireDriver(t, "none"); e.none(t) })
}

// wantEth0 asserts that the address the CRI reports is the one on the
// pod's eth0.
func (d *containerd) wantEth0(ctx context.Context, t *testing.T, p *pod, subnet string) {
	t.Helper()
	if len(p.ips) == 0 {
		t.Fatalf("pod %s: the CRI reports no IP", p.Name)
	}
	wantIn(t, p.ips[0], subnet)
	out := d.exec(ctx, t, p, "ip", "-o", "addr", "show", "dev", "eth0")
	if !strings.Contains(out, " "+p.ips[0]+"/") {
		t.Fatalf("pod %s: CRI reports %s but eth0 holds:\n%s", p.Name, p.ips[0], out)
	}
}

var httpd = []string{"httpd", "-f", "-p", "80", "-h", "/www"}

// bridge: two pods get the IPs the CRI reports, reach each other, a
// port_mappings entry is reachable from the node (own address and
// 127.0.0.1) and from another machine, and the kubelet's teardown leaves
// the node exactly as it was.
func (e *ctdEnv) bridge(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, dirs := e.d, []string{e.ipamDir, e.d.stateDir}
	port := func(host int32) []*rt.PortMapping {
		return []*rt.PortMapping{{Protocol: rt.Protocol_TCP, ContainerPort: 80, HostPort: host}}
	}
	// A first pod creates what stays for the network's lifetime (the
	// bridge, the shared rules); the pods after it must leave nothing.
	warm := d.runPod(ctx, t, &cri.Pod{Name: "warm", Ports: port(ctdHostPort - 1)}, httpd...)
	d.removePod(ctx, t, warm, "host-local-bridge")
	before := nodeState(t, d.host, dirs...)
	if strings.Contains(before, warm.ips[0]) {
		t.Errorf("the node still mentions the removed pod's address %s:\n%s", warm.ips[0], before)
	}

	a := d.runPod(ctx, t, &cri.Pod{Name: "web", Ports: port(ctdHostPort)}, httpd...)
	b := d.runPod(ctx, t, &cri.Pod{Name: "client"}, httpd...)
	d.wantEth0(ctx, t, a, ctdBridgeNet)
	d.wantEth0(ctx, t, b, ctdBridgeNet)
	if a.ips[0] == b.ips[0] {
		t.Fatalf("both pods got %s", a.ips[0])
	}
	// The example's second range makes the pods dual-stack: the CRI
	// reports the IPv6 address too (the Pod's podIPs), and it works.
	for _, p := range []*pod{a, b} {
		if len(p.ips) != 2 {
			t.Fatalf("pod %s: the CRI reports %v, want an IPv4 and an IPv6 address", p.Name, p.ips)
		}
		wantIn(t, p.ips[1], ctdBridgeV6)
	}
	if got := d.exec(ctx, t, b, fetch("http://["+a.ips[1]+"]/")...); strings.TrimSpace(got) != page {
		t.Errorf("pod to pod HTTP over IPv6 served %q", got)
	}
	d.exec(ctx, t, b, "ping", "-c", "1", "-W", "3", a.ips[0])
	if got := d.exec(ctx, t, b, fetch("http://"+a.ips[0]+"/")...); strings.TrimSpace(got) != page {
		t.Errorf("pod to pod HTTP served %q", got)
	}
	for _, url := range []string{
		fmt.Sprintf("http://%s:%d/", ctdUplink, ctdHostPort), fmt.Sprintf("http://127.0.0.1:%d/", ctdHostPort)} {
		wantPage(t, d.host, url)
	}
	wantPage(t, e.outside, fmt.Sprintf("http://%s:%d/", ctdUplink, ctdHostPort))

	d.removePod(ctx, t, a, "host-local-bridge")
	d.removePod(ctx, t, b, "host-local-bridge")
	wantSameState(t, "StopPodSandbox+RemovePodSandbox of two host-local-bridge pods", before, nodeState(t, d.host, dirs...))
	wantNoMention(t, dirs, warm.id, a.id, b.id)
	noCacheLeft(t, e.cache0, "nd-ctd-bridge")
}

// bridgeParallel: a node starts and stops several pods at once (the
// kubelet works on pods in parallel): each gets its own address, they
// reach each other, and all the teardowns together leave nothing.
func (e *ctdEnv) bridgeParallel(t *testing.T) {
	const n = 6
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, dirs := e.d, []string{e.ipamDir, e.d.stateDir}
	warm := d.runPod(ctx, t, &cri.Pod{Name: "par-warm"}, "sleep", "3600")
	d.removePod(ctx, t, warm, "host-local-bridge")
	before := nodeState(t, d.host, dirs...)

	pods, errs := make([]*pod, n), make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { pods[i], errs[i] = d.startPod(ctx, &cri.Pod{Name: fmt.Sprintf("par-%d", i)}, "sleep", "3600") })
	}
	wg.Wait()
	seen := map[string]string{}
	for i, p := range pods {
		if p != nil {
			t.Cleanup(func() { d.forget(p.id) })
		}
		if errs[i] != nil {
			t.Fatalf("pod par-%d: %v", i, errs[i])
		}
		wantIn(t, p.ips[0], ctdBridgeNet)
		if other, dup := seen[p.ips[0]]; dup {
			t.Fatalf("pods %s and %s both got %s", other, p.Name, p.ips[0])
		}
		seen[p.ips[0]] = p.Name
	}
	for _, p := range pods[1:] {
		d.exec(ctx, t, pods[0], "ping", "-c", "1", "-W", "3", p.ips[0])
	}
	for i, p := range pods {
		wg.Go(func() { errs[i] = d.stopPod(ctx, p) })
	}
	wg.Wait()
	ids := []string{warm.id}
	for i, p := range pods {
		if errs[i] != nil {
			t.Errorf("pod %s: %v", p.Name, errs[i])
		}
		d.wantDELs(t, p, "host-local-bridge")
		ids = append(ids, p.id)
	}
	wantSameState(t, fmt.Sprintf("the parallel teardown of %d host-local-bridge pods", n), before, nodeState(t, d.host, dirs...))
	wantNoMention(t, dirs, ids...)
}

// bridgeConflict: a pod whose hostPort another pod holds fails to start
// with an error that names the conflict (code 101), and the failed ADD
// leaves nothing: containerd's DEL of the whole list after it must
// succeed, or containerd keeps the sandbox and its netns for ever.
func (e *ctdEnv) bridgeConflict(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, dirs := e.d, []string{e.ipamDir, e.d.stateDir}
	port := []*rt.PortMapping{{Protocol: rt.Protocol_TCP, ContainerPort: 80, HostPort: ctdHostPort + 5}}
	a := d.runPod(ctx, t, &cri.Pod{Name: "holder", Ports: port}, httpd...)
	before := nodeState(t, d.host, dirs...)
	nsDir := filepath.Join(d.dir, "state", "io.containerd.grpc.v1.cri", "netns")
	netns0 := files(t, nsDir)

	b, err := d.startPod(ctx, &cri.Pod{Name: "clash", Ports: port}, httpd...)
	if b != nil {
		t.Cleanup(func() { d.forget(b.id) })
	}
	if err == nil || !strings.Contains(err.Error(), "host port") {
		t.Fatalf("a pod publishing a held host port: got %v, want the plugin's host port conflict", err)
	}
	adds := 0
	for _, c := range d.rec.calls(t) {
		if c.Plugin == "host-local-bridge" && c.verb() == "ADD" && strings.Contains(c.Env["CNI_ARGS"], "K8S_POD_NAME=clash") {
			adds++
			if c.Exit == 0 || !strings.Contains(c.Stdout, `"code": 101`) {
				t.Errorf("the clashing ADD: want error code 101, got exit %d: %s", c.Exit, c.Stdout)
			}
			for _, del := range of(d.rec.calls(t), "", "DEL", c.id()) {
				if del.Exit != 0 {
					t.Errorf("DEL after the failed ADD failed (containerd then leaks the sandbox): %s", del)
				}
			}
		}
	}
	if adds != 1 {
		t.Errorf("want one ADD of the clashing pod, saw %d", adds)
	}
	if got := files(t, nsDir); strings.Join(got, " ") != strings.Join(netns0, " ") {
		t.Errorf("the failed sandbox left a network namespace: before %v, after %v", netns0, got)
	}
	wantSameState(t, "a failed RunPodSandbox", before, nodeState(t, d.host, dirs...))
	wantPage(t, d.host, fmt.Sprintf("http://127.0.0.1:%d/", ctdHostPort+5)) // the holder keeps its port
	d.removePod(ctx, t, a, "host-local-bridge")
}

// macvlan: two pods on one parent get the IPs the CRI reports, reach each
// other and a machine on the parent's segment, which reaches them; the
// teardown leaves nothing.
func (e *ctdEnv) macvlan(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, dirs := e.d, []string{e.ipamDir, e.d.stateDir}
	mv := &cri.Pod{Handler: "nd-macvlan"}
	warm := d.runPod(ctx, t, &cri.Pod{Name: "mv-warm", Handler: mv.Handler}, httpd...)
	d.removePod(ctx, t, warm, "macvlan")
	before := nodeState(t, d.host, dirs...)

	a := d.runPod(ctx, t, &cri.Pod{Name: "mv-web", Handler: mv.Handler}, httpd...)
	b := d.runPod(ctx, t, &cri.Pod{Name: "mv-client", Handler: mv.Handler}, httpd...)
	d.wantEth0(ctx, t, a, ctdMacvlan)
	d.wantEth0(ctx, t, b, ctdMacvlan)
	d.exec(ctx, t, b, "ping", "-c", "1", "-W", "3", a.ips[0])
	if got := d.exec(ctx, t, b, fetch("http://"+a.ips[0]+"/")...); strings.TrimSpace(got) != page {
		t.Errorf("pod to pod HTTP served %q", got)
	}
	d.exec(ctx, t, a, "ping", "-c", "1", "-W", "3", ctdLANPeer)
	wantPage(t, e.lan, "http://"+a.ips[0]+"/")
	wantPage(t, d.host, "http://"+a.ips[0]+"/") // the node (kubelet probes) through the example's hostShim

	d.removePod(ctx, t, a, "macvlan")
	d.removePod(ctx, t, b, "macvlan")
	wantSameState(t, "StopPodSandbox+RemovePodSandbox of two macvlan pods", before, nodeState(t, d.host, dirs...))
	wantNoMention(t, dirs, warm.id, a.id, b.id)
	noCacheLeft(t, e.cache0, "nd-ctd-macvlan")
}

// hostns: a pod on a hostns network (a RuntimeClass, where the kubelet's
// hostNetwork makes no CNI call at all) runs in the node's network
// namespace, the CRI reports the node's address, and the teardown
// changes nothing on the node.
func (e *ctdEnv) hostns(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, dirs := e.d, []string{e.ipamDir, e.d.stateDir}
	h := &cri.Pod{Handler: "nd-hostns"}
	warm := d.runPod(ctx, t, &cri.Pod{Name: "host-warm", Handler: h.Handler}, "sleep", "3600")
	d.removePod(ctx, t, warm, "hostns")
	before := nodeState(t, d.host, dirs...)

	p := d.runPod(ctx, t, &cri.Pod{Name: "host", Handler: h.Handler}, httpd...)
	if len(p.ips) == 0 || p.ips[0] != ctdUplink {
		t.Errorf("the CRI reports %v for a hostns pod, want the node's %s", p.ips, ctdUplink)
	}
	if out := d.exec(ctx, t, p, "ip", "-o", "link"); !strings.Contains(out, "ndrt-up0") || !strings.Contains(out, "ndrt-mv0") {
		t.Errorf("a hostns pod does not see the node's links:\n%s", out)
	}
	// Its server listens in the node's own port space.
	wantPage(t, d.host, "http://127.0.0.1:80/")
	wantPage(t, e.outside, "http://"+ctdUplink+":80/")
	d.removePod(ctx, t, p, "hostns")
	wantSameState(t, "StopPodSandbox+RemovePodSandbox of a hostns pod", before, nodeState(t, d.host, dirs...))
	wantNoMention(t, dirs, warm.id, p.id)
	noCacheLeft(t, e.cache0, "nd-ctd-host")
}

// joinns: a pod joins a running macvlan pod's network stack, named by the
// pod annotation netdrivers.io/target (the sandbox ID, which is the
// target's CNI_CONTAINERID under containerd): the CRI reports the
// target's address, the joiner reaches the target's server on 127.0.0.1,
// and removing the joiner leaves the target working.
func (e *ctdEnv) joinns(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, dirs := e.d, []string{e.ipamDir, e.d.stateDir}
	warm := d.runPod(ctx, t, &cri.Pod{Name: "join-warm-target", Handler: "nd-macvlan"}, httpd...)
	wj := d.runPod(ctx, t, &cri.Pod{Name: "join-warm", Handler: "nd-joinns",
		Annotations: map[string]string{"netdrivers.io/target": warm.id}}, "sleep", "3600")
	d.removePod(ctx, t, wj, "joinns")
	d.removePod(ctx, t, warm, "macvlan")
	before := nodeState(t, d.host, dirs...)

	tgt := d.runPod(ctx, t, &cri.Pod{Name: "join-target", Handler: "nd-macvlan"}, httpd...)
	j := d.runPod(ctx, t, &cri.Pod{Name: "joiner", Handler: "nd-joinns",
		Annotations: map[string]string{"netdrivers.io/target": tgt.id}}, "sleep", "3600")
	if len(j.ips) == 0 || j.ips[0] != tgt.ips[0] {
		t.Errorf("the CRI reports %v for the joiner, want its target's %v", j.ips, tgt.ips)
	}
	d.wantEth0(ctx, t, j, ctdMacvlan)
	if got := d.exec(ctx, t, j, fetch("http://127.0.0.1/")...); strings.TrimSpace(got) != page {
		t.Errorf("the joiner got %q from its target's server on 127.0.0.1", got)
	}
	d.removePod(ctx, t, j, "joinns")
	wantPage(t, e.lan, "http://"+tgt.ips[0]+"/")
	// containerd also ran its loopback network on the joiner's netns path,
	// which is the target's namespace: its DEL must leave the target's lo
	// alone.
	if got, err := d.cri.Exec(ctx, tgt.ctr, 10*time.Second, fetch("http://127.0.0.1/")...); err != nil || strings.TrimSpace(got) != page {
		t.Errorf("after the joiner left, the target's own 127.0.0.1 server fails (%q, %v): did the loopback DEL set the target's lo down?", got, err)
	}
	d.removePod(ctx, t, tgt, "macvlan")
	wantSameState(t, "StopPodSandbox+RemovePodSandbox of a joinns pod and its target", before, nodeState(t, d.host, dirs...))
	wantNoMention(t, dirs, warm.id, wj.id, tgt.id, j.id)
	noCacheLeft(t, e.cache0, "nd-ctd-join")
}

// none: containerd's CRI requires the pod network to give eth0 an address
// (a Kubernetes pod always has an IP), so a none network cannot run a pod:
// RunPodSandbox fails with containerd's "failed to find network info",
// and the failed sandbox leaves nothing behind (the DEL of the whole list
// succeeds, so containerd removes the netns).
func (e *ctdEnv) none(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d := e.d
	nsDir := filepath.Join(d.dir, "state", "io.containerd.grpc.v1.cri", "netns")
	netns0 := files(t, nsDir)
	p := &cri.Pod{Name: "none", Namespace: "e2e", UID: "uid-none", Handler: "nd-none", LogDir: dir(t, "containerd", "logs", "uid-none")}
	_, err := d.cri.RunPod(ctx, p)
	if err == nil || !strings.Contains(err.Error(), "failed to find network info") {
		t.Fatalf("RunPodSandbox on a none network: got %v, want containerd's \"failed to find network info\"", err)
	}
	if got := files(t, nsDir); strings.Join(got, " ") != strings.Join(netns0, " ") {
		t.Errorf("the failed sandbox left a network namespace: before %v, after %v", netns0, got)
	}
	r, err := d.cri.RT.ListPodSandbox(ctx, &rt.ListPodSandboxRequest{Filter: &rt.PodSandboxFilter{
		LabelSelector: map[string]string{"io.kubernetes.pod.name": p.Name}}})
	if err != nil || len(r.Items) > 0 {
		t.Errorf("the failed sandbox is still listed (%v): %v", err, r)
	}
	noCacheLeft(t, e.cache0, "nd-ctd-none")
}
