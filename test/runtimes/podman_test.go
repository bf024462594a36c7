//go:build runtimes

package runtimes

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// Addresses and names of the Podman scenarios (private host namespace).
const (
	pmUplink    = "10.213.200.1" // the node's address, towards "outside"
	pmBridgeNet = "10.213.2.0/24"
	pmBridgeV6  = "fd00:213:2::/64"
	pmStaticIP  = "10.213.2.50"
	pmStaticMAC = "02:42:0a:d5:02:32"
	pmMacvlan   = "10.213.12.0/24"
	pmLANPeer   = "10.213.12.254"
	pmHostPort  = 18081

	pmBridge  = "nd-pm-bridge"
	pmMV      = "nd-pm-macvlan"
	pmHost    = "nd-pm-host"
	pmJoin    = "nd-pm-join"
	pmNone    = "nd-pm-none"
	pmMarkDev = "ndrt-up0" // a link only the node has
)

type pmEnv struct {
	p       *podman
	outside *nettest.NS
	lan     *nettest.NS
	ipamDir string
	cache0  map[string]bool // libcni's result cache before the run
}

// TestPodman runs containers with `podman run --network <net>` on each
// driver's network, Podman 4 with network_backend="cni".
func TestPodman(t *testing.T) {
	t.Parallel()
	e := &pmEnv{outside: newNS(t), lan: newNS(t), cache0: cacheEntries()}
	host := newNS(t)
	nettest.NewVeth(t, host, pmMarkDev, pmUplink+"/24", e.outside, "ndrt-cl0", "10.213.200.2/24")
	nettest.AddRoute(t, e.outside, "default", pmUplink)
	nettest.NewVeth(t, host, "ndrt-mv0", "", e.lan, "ndrt-lan0", pmLANPeer+"/24")
	e.p = newPodman(t, host, "podman")
	e.ipamDir = dir(t, "podman", "ipam")

	var nets []string
	// The shipped conf-examples, with only private names, ranges and
	// stores (and the macvlan parent) set.
	add := func(driver, name string, body func() []byte) {
		if driverExists(driver) {
			writeConf(t, e.p.netDir, name, body())
			nets = append(nets, name)
		}
	}
	add("host-local-bridge", pmBridge, func() []byte {
		return bridgeConf(t, pmBridge, "ndrt-br1", e.ipamDir, pmBridgeNet, pmBridgeV6)
	})
	add("macvlan", pmMV, func() []byte { return macvlanConf(t, pmMV, "ndrt-mv0", pmMacvlan, e.ipamDir) })
	add("hostns", pmHost, func() []byte { return example(t, "hostns", pmHost, nil) })
	add("joinns", pmJoin, func() []byte { return example(t, "joinns", pmJoin, nil) })
	add("none", pmNone, func() []byte { return example(t, "none", pmNone, nil) })
	// Podman VERSION-probes every plugin of every conflist and drops, with
	// a mere warning, a conflist whose cniVersion one does not list.
	if _, err := e.p.networks(nets...); err != nil {
		t.Fatal(err)
	}

	t.Run("skipped-conflist-detected", e.skipDetected)
	t.Run("host-local-bridge", func(t *testing.T) { requireDriver(t, "host-local-bridge"); e.bridge(t) })
	t.Run("host-local-bridge-port-conflict", func(t *testing.T) { requireDriver(t, "host-local-bridge"); e.bridgeConflict(t) })
	t.Run("macvlan", func(t *testing.T) { requireDriver(t, "macvlan"); e.macvlan(t) })
	t.Run("hostns", func(t *testing.T) { requireDriver(t, "hostns"); e.hostns(t) })
	t.Run("joinns", func(t *testing.T) { requireDriver(t, "joinns", "host-local-bridge"); e.joinns(t) })
	t.Run("none", func(t *testing.T) { requireDriver(t, "none"); e.none(t) })
}

// skipDetected proves the guard above works: a conflist whose cniVersion
// the plugin does not list is reported, with Podman's warning, instead of
// surfacing later as "network not found".
func (e *pmEnv) skipDetected(t *testing.T) {
	q := newPodman(t, e.p.host, "podman-skip")
	writeConf(t, q.netDir, "nd-pm-badver", []byte(`{"cniVersion": "1.2.0", "name": "nd-pm-badver", "plugins": [{"type": "none"}]}`))
	_, err := q.networks("nd-pm-badver")
	if err == nil || !strings.Contains(err.Error(), skipWarning) {
		t.Fatalf("a conflist Podman skips went unnoticed: %v", err)
	}
}

// state is the node state the plugins may touch.
func (e *pmEnv) state(t *testing.T) string { return nodeState(t, e.p.host, e.ipamDir, e.p.stateDir) }

// warm runs and removes one container on network, creating what stays
// for the network's lifetime, and returns the node state after it and
// the time the scenario's own calls start.
func (e *pmEnv) warm(t *testing.T, network string, args ...string) (string, time.Time) {
	t.Helper()
	run := append([]string{"run", "--rm", "--network", network}, args...)
	e.p.must(t, nil, append(run, "--rootfs", e.p.rootfs, "true")...)
	return e.state(t), time.Now()
}

// finish asserts that the scenario's teardown left the node as before
// it, no result cache entry of network, and that every plugin call since
// t0 succeeded and every ADD was undone by a DEL.
func (e *pmEnv) finish(t *testing.T, what, network, before string, t0 time.Time, refused ...string) {
	t.Helper()
	wantSameState(t, what, before, e.state(t))
	noCacheLeft(t, e.cache0, network)
	e.p.rec.wantCleanSince(t, t0, refused...)
	var ids []string
	for _, c := range since(e.p.rec.calls(t), t0) {
		if c.verb() == "ADD" {
			ids = append(ids, c.id())
		}
	}
	wantNoMention(t, []string{e.ipamDir, e.p.stateDir}, ids...)
}

// start runs a detached container (removed when t ends if the scenario
// did not get that far) and returns what podman inspect says of it.
func (e *pmEnv) start(t *testing.T, env []string, name, network string, args ...string) container {
	t.Helper()
	run := append([]string{"run", "-d", "--name", name, "--network", network}, args...)
	t.Cleanup(func() { e.p.run(nil, "rm", "-f", "-t", "0", "--ignore", name) })
	e.p.must(t, env, run...)
	return e.p.inspect(t, name, network)
}

// serve starts a detached busybox httpd container.
func (e *pmEnv) serve(t *testing.T, name, network string, args ...string) container {
	t.Helper()
	return e.start(t, nil, name, network, append(append(args, "--rootfs", e.p.rootfs), httpd...)...)
}

// exec runs argv in a running container.
func (e *pmEnv) exec(t *testing.T, name string, argv ...string) string {
	t.Helper()
	return e.p.must(t, nil, append([]string{"exec", name}, argv...)...)
}

// wantEth0 asserts that the container's eth0 holds ip (and mac if set).
func (e *pmEnv) wantEth0(t *testing.T, name, ip, mac string) {
	t.Helper()
	out := e.p.must(t, nil, "exec", name, "ip", "-o", "addr", "show", "dev", "eth0")
	if !strings.Contains(out, " "+ip+"/") {
		t.Fatalf("%s: podman reports %s but eth0 holds:\n%s", name, ip, out)
	}
	if mac == "" {
		return
	}
	if out := e.p.must(t, nil, "exec", name, "ip", "-o", "link", "show", "dev", "eth0"); !strings.Contains(out, mac) {
		t.Fatalf("%s: eth0 does not carry MAC %s:\n%s", name, mac, out)
	}
}

// bridge: `-p`, `--ip` and `--mac-address` on host-local-bridge; the
// published port answers from the node (own address, 127.0.0.1) and from
// another machine; a second container reaches the first; `podman rm -f`
// leaves the node as it was.
func (e *pmEnv) bridge(t *testing.T) {
	before, t0 := e.warm(t, pmBridge, "-p", fmt.Sprintf("%d:80", pmHostPort-1))
	web := e.serve(t, "pm-web", pmBridge, "-p", fmt.Sprintf("%d:80", pmHostPort), "--ip", pmStaticIP, "--mac-address", pmStaticMAC)
	if web.IP != pmStaticIP || !strings.EqualFold(web.MAC, pmStaticMAC) {
		t.Errorf("podman inspect: IP %q MAC %q, want %s %s", web.IP, web.MAC, pmStaticIP, pmStaticMAC)
	}
	e.wantEth0(t, "pm-web", pmStaticIP, pmStaticMAC)
	cl := e.serve(t, "pm-client", pmBridge)
	wantIn(t, cl.IP, pmBridgeNet)
	e.wantEth0(t, "pm-client", cl.IP, "")
	if got := e.exec(t, "pm-client", fetch("http://"+pmStaticIP+"/")...); got != page {
		t.Errorf("container to container HTTP served %q", got)
	}
	for _, url := range []string{
		fmt.Sprintf("http://%s:%d/", pmUplink, pmHostPort), fmt.Sprintf("http://127.0.0.1:%d/", pmHostPort)} {
		wantPage(t, e.p.host, url)
	}
	wantPage(t, e.outside, fmt.Sprintf("http://%s:%d/", pmUplink, pmHostPort))
	e.p.must(t, nil, "rm", "-f", "-t", "0", "pm-web", "pm-client")
	e.finish(t, "podman rm -f of two host-local-bridge containers", pmBridge, before, t0)
}

// bridgeConflict: a container publishing a host port another one holds
// does not start, with an error naming the conflict, and leaves nothing.
func (e *pmEnv) bridgeConflict(t *testing.T) {
	before, t0 := e.warm(t, pmBridge, "-p", fmt.Sprintf("%d:80", pmHostPort-1))
	p := fmt.Sprintf("%d:80", pmHostPort+5)
	e.serve(t, "pm-holder", pmBridge, "-p", p)
	t.Cleanup(func() { e.p.run(nil, "rm", "-f", "-t", "0", "--ignore", "pm-clash") })
	_, err := e.p.run(nil, append([]string{"run", "-d", "--name", "pm-clash", "--network", pmBridge, "-p", p, "--rootfs", e.p.rootfs}, httpd...)...)
	if err == nil || !strings.Contains(err.Error(), "host port already in use") {
		t.Fatalf("a container publishing a held host port: got %v, want the plugin's host port conflict", err)
	}
	var refused []string
	for _, c := range since(e.p.rec.calls(t), t0) {
		if c.verb() == "ADD" && c.Exit != 0 {
			refused = append(refused, c.id())
			if !strings.Contains(c.Stdout, `"code": 101`) {
				t.Errorf("the clashing ADD: want code 101, got %s", c.Stdout)
			}
		}
	}
	if len(refused) != 1 {
		t.Errorf("want one refused ADD, got %d", len(refused))
	}
	wantPage(t, e.p.host, fmt.Sprintf("http://127.0.0.1:%d/", pmHostPort+5)) // the holder keeps its port
	e.p.must(t, nil, "rm", "-f", "-t", "0", "--ignore", "pm-clash", "pm-holder")
	e.finish(t, "a clashing container and its holder", pmBridge, before, t0, refused...)
}

// macvlan: the container gets an address on the parent's segment, which
// reaches it and which it reaches; rm -f leaves nothing.
func (e *pmEnv) macvlan(t *testing.T) {
	before, t0 := e.warm(t, pmMV)
	c := e.serve(t, "pm-mv", pmMV)
	wantIn(t, c.IP, pmMacvlan)
	e.wantEth0(t, "pm-mv", c.IP, c.MAC)
	e.exec(t, "pm-mv", "ping", "-c", "1", "-W", "3", pmLANPeer)
	wantPage(t, e.lan, "http://"+c.IP+"/")
	e.p.must(t, nil, "rm", "-f", "-t", "0", "pm-mv")
	e.finish(t, "podman rm -f of a macvlan container", pmMV, before, t0)
}

// nsIno is the inode of a network namespace file ("net:[<ino>]" form).
func nsIno(t *testing.T, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("net:[%d]", st.Ino)
}

// hostns: the container runs in the node's network namespace and sees
// its interfaces; rm (the plugin's DEL) changes nothing on the node.
func (e *pmEnv) hostns(t *testing.T) {
	before, t0 := e.warm(t, pmHost)
	c := e.start(t, nil, "pm-host", pmHost, "--rootfs", e.p.rootfs, "sleep", "3600")
	links := e.exec(t, "pm-host", "ip", "-o", "link")
	if !strings.Contains(links, pmMarkDev) || !strings.Contains(links, "ndrt-mv0") {
		t.Errorf("a hostns container does not see the node's links:\n%s", links)
	}
	if got, want := nsIno(t, fmt.Sprintf("/proc/%d/ns/net", c.PID)), nsIno(t, e.p.host.Path()); got != want {
		t.Errorf("a hostns container runs in %s, the node is %s", got, want)
	}
	e.p.must(t, nil, "rm", "-f", "-t", "0", "pm-host")
	e.finish(t, "podman rm -f of a hostns container", pmHost, before, t0)
}

// joinns: a container joins another running container's network stack
// (the target named per call, CNI_ARGS TARGET=<container ID> through
// Podman's own CNI_ARGS), sees its address and reaches its server on
// 127.0.0.1; removing the joiner leaves the target working.
func (e *pmEnv) joinns(t *testing.T) {
	before, t0 := e.warm(t, pmBridge)
	tgt := e.serve(t, "pm-target", pmBridge)
	env := []string{"CNI_ARGS=TARGET=" + tgt.ID}
	join := e.start(t, env, "pm-join", pmJoin, "--rootfs", e.p.rootfs, "sleep", "3600")
	if got, want := nsIno(t, fmt.Sprintf("/proc/%d/ns/net", join.PID)), nsIno(t, fmt.Sprintf("/proc/%d/ns/net", tgt.PID)); got != want {
		t.Fatalf("the joiner runs in %s, its target in %s", got, want)
	}
	e.wantEth0(t, "pm-join", tgt.IP, "")
	if got := e.exec(t, "pm-join", fetch("http://127.0.0.1/")...); got != page {
		t.Errorf("the joiner got %q from its target's server on 127.0.0.1", got)
	}
	e.p.must(t, nil, "rm", "-f", "-t", "0", "pm-join")
	wantPage(t, e.p.host, "http://"+tgt.IP+"/")
	e.p.must(t, nil, "rm", "-f", "-t", "0", "pm-target")
	e.finish(t, "podman rm -f of a joinns container and its target", pmJoin, before, t0)
	noCacheLeft(t, e.cache0, pmBridge)
}

// none: the container has loopback only; rm changes nothing on the node.
func (e *pmEnv) none(t *testing.T) {
	before, t0 := e.warm(t, pmNone)
	e.start(t, nil, "pm-none", pmNone, "--rootfs", e.p.rootfs, "sleep", "3600")
	if links := e.exec(t, "pm-none", "ip", "-o", "link"); len(strings.Split(links, "\n")) != 1 || !strings.Contains(links, "lo:") {
		t.Errorf("a none container holds more than lo:\n%s", links)
	}
	if addrs := e.exec(t, "pm-none", "ip", "-o", "addr"); !strings.Contains(addrs, "127.0.0.1/8") {
		t.Errorf("a none container's lo has no 127.0.0.1/8:\n%s", addrs)
	}
	e.p.must(t, nil, "rm", "-f", "-t", "0", "pm-none")
	e.finish(t, "podman rm -f of a none container", pmNone, before, t0)
}
