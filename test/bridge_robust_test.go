package test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/netdrivers/netdrivers/pkg/nettest"
	"github.com/netdrivers/netdrivers/pkg/state"
)

// TestBridgeGC: GC with an empty valid list removes every attachment of
// the network (links, store, rules, reservations) and no other network's;
// GC keeping one attachment keeps exactly that one working.
func TestBridgeGC(t *testing.T) {
	eachBackend(t, func(t *testing.T, n *node, backend string) {
		list := bridgeConf(t, "gcnet", backend, "10.94.0.0/24", nil)
		keepList := bridgeConf(t, "keepnet", backend, "10.95.0.0/24", nil)
		other := n.attach(t, keepList, ports("tcp//9090/80"))
		n.warm(t, list)
		before := n.hostState(t)
		a := n.attach(t, list, ports("tcp//8080/80"))
		b := n.attach(t, list, ports("tcp//8081/80"))
		gc(t, n, list, b)
		if nettest.HasLink(t, a.ns, "eth0") || !nettest.HasLink(t, b.ns, "eth0") {
			t.Error("GC removed the wrong attachment")
		}
		n.cni.MustCheck(t, list, b.rt)
		gc(t, n, list)
		if e := storeEntries(t, list); len(e) != 0 {
			t.Errorf("store entries after GC: %v", e)
		}
		// GC of a network with nothing left may also drop its shared
		// rules; it must leave nothing that was not there before.
		if d := stateAdded(before, n.hostState(t)); d != "" {
			t.Errorf("after GC: %s", d)
		}
		n.cni.MustCheck(t, keepList, other.rt)
		nettest.Listen(t, other.ns, "tcp", ":80", "kept")
		wantFrom(t, n.outside, "tcp", lanNode+":9090", "kept ")
		// Ports freed by GC can be published again.
		c := n.attach(t, list, ports("tcp//8080/80"))
		n.detach(t, list, c)
		n.detach(t, keepList, other)
	})
}

// TestBridgeKillMidAdd: the plugin is killed with SIGKILL at many moments
// during ADD; DEL (and, separately, GC) then leaves the node as before.
func TestBridgeKillMidAdd(t *testing.T) {
	nettest.RequireRoot(t)
	delays := []time.Duration{0, 300 * time.Microsecond, 700 * time.Microsecond, 1500 * time.Microsecond, 3 * time.Millisecond, 6 * time.Millisecond}
	for _, cleanup := range []string{"DEL", "GC"} {
		t.Run(cleanup, func(t *testing.T) {
			t.Parallel()
			n := newNode(t)
			list := bridgeConf(t, "kill", "nftables", "10.96.0.0/24", nil)
			warm := n.attach(t, list, nil) // the bridge and tables exist: kills land in the per-attachment work
			before := n.hostState(t)
			for _, d := range delays {
				ns := nettest.NewNS(t)
				rt := withPorts(nettest.Runtime(t, ns, "eth0"), ports("tcp//8080/80", "udp//8080/80"))
				killAddAfter(t, n, list, rt, d)
				if cleanup == "DEL" {
					delNoPrev(t, n, list, rt)
				} else {
					gc(t, n, list, warm)
				}
				if e := storeEntries(t, list); len(e) != 1 {
					t.Errorf("after kill at %v and %s: store = %v", d, cleanup, e)
				}
				if d := stateDiff(before, n.hostState(t)); d != "" {
					t.Errorf("after kill at %v and %s: %s", d, cleanup, d)
				}
				if nettest.HasLink(t, ns, "eth0") {
					t.Errorf("after kill at %v and %s: eth0 left in the container", d, cleanup)
				}
			}
			n.detach(t, list, warm)
		})
	}
}

// killAddAfter execs one ADD of the plugin and SIGKILLs it after d.
func killAddAfter(t *testing.T, n *node, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf, d time.Duration) {
	t.Helper()
	var conf map[string]any
	json.Unmarshal(list.Plugins[0].Bytes, &conf)
	conf["cniVersion"], conf["name"] = list.CNIVersion, list.Name
	conf["runtimeConfig"] = map[string]any{"portMappings": rt.CapabilityArgs["portMappings"]}
	stdin, _ := json.Marshal(conf)
	cmd := exec.Command(filepath.Join(nettest.Bins(t), "host-local-bridge"))
	cmd.Env = append(os.Environ(), "CNI_COMMAND=ADD", "CNI_CONTAINERID="+rt.ContainerID, "CNI_NETNS="+rt.NetNS,
		"CNI_IFNAME="+rt.IfName, "CNI_PATH="+nettest.Bins(t), state.EnvRoot+"="+n.cni.StateDir)
	cmd.Stdin = bytes.NewReader(stdin)
	n.host.MustDo(t, func() error { return cmd.Start() })
	time.Sleep(d) // the point of the test: land the kill at different moments
	cmd.Process.Kill()
	cmd.Wait()
}

// TestBridgeBadInput: every invalid config gets its code and leaves
// nothing behind.
func TestBridgeBadInput(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	n := newNode(t)
	exhausted := bridgeConf(t, "tiny", "nftables", "10.98.0.0/30", nil)
	n.warm(t, exhausted)
	spare := bridgeConf(t, "spare", "nftables", "10.96.0.0/24", nil)
	n.warm(t, spare)
	before := n.hostState(t)
	cases := []struct {
		name  string
		extra map[string]any
		ports []map[string]any
		code  uint
		want  string
	}{
		{"bad gatewayMode", map[string]any{"gatewayMode": "bridged"}, nil, 7, "gatewayMode"},
		{"bad backend", map[string]any{"firewallBackend": "pf"}, nil, 7, "firewallBackend"},
		{"mtu too small", map[string]any{"mtu": 10}, nil, 7, "mtu"},
		{"mtu not a number", map[string]any{"mtu": "big"}, nil, 7, "mtu"},
		{"bridge name too long", map[string]any{"bridge": "a-very-long-bridge-name"}, nil, 7, "bridge"},
		{"hairpin and promisc", map[string]any{"hairpinMode": true, "promiscMode": true}, nil, 7, "promiscMode"},
		{"vlan", map[string]any{"vlan": 10}, nil, 2, "vlan"},
		{"vlanTrunk", map[string]any{"vlanTrunk": []any{map[string]any{"id": 5}}}, nil, 2, "vlanTrunk"},
		{"bad subnet", map[string]any{"ipam": map[string]any{"subnet": "10.1.0.0/33"}}, nil, 7, "10.1.0.0/33"},
		{"gateway outside subnet", map[string]any{"ipam": map[string]any{"gateway": "10.2.0.1"}}, nil, 7, "10.2.0.1"},
		{"ipv6 localhost publish", nil, ports("tcp/::1/8080/80"), 7, "::1"},
		{"bad port", nil, ports("tcp//0/80"), 7, "hostPort"},
		{"bad protocol", nil, ports("icmp//80/80"), 7, "protocol"},
		{"bad hostBindingIP", map[string]any{"hostBindingIP": "x"}, nil, 7, "hostBindingIP"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			list := bridgeConf(t, "bad", "nftables", "10.97.0.0/24", tc.extra)
			ns := nettest.NewNS(t)
			rt := nettest.Runtime(t, ns, "eth0")
			if tc.ports != nil {
				withPorts(rt, tc.ports)
			}
			_, err := n.cni.AddNetworkList(context.Background(), list, rt)
			if nettest.Code(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ADD = %v, want code %d mentioning %q", err, tc.code, tc.want)
			}
			if nettest.HasLink(t, ns, "eth0") {
				t.Error("eth0 created")
			}
		})
	}
	c := n.attach(t, exhausted, nil)
	ns := nettest.NewNS(t)
	rt := nettest.Runtime(t, ns, "eth0")
	// Ports are reserved while IPAM allocates: its failure releases them.
	published := ports("tcp//18181/80", "udp//18181/53")
	withPorts(rt, published)
	if _, err := n.cni.AddNetworkList(context.Background(), exhausted, rt); nettest.Code(err) != 100 {
		t.Errorf("exhausted pool: %v, want 100", err)
	}
	if nettest.HasLink(t, ns, "eth0") {
		t.Error("exhausted ADD created eth0")
	}
	n.detach(t, spare, n.attach(t, spare, published)) // fails if the ports are still held
	n.cni.MustDel(t, exhausted, rt)
	n.detach(t, exhausted, c)
	if d := stateDiff(before, n.hostState(t)); d != "" {
		t.Error(d)
	}
}

// TestBridgeOptions: mtu, hairpinMode off, isGateway/isDefaultGateway off,
// enabledad, a named bridge, and the reference's refused options set to
// values that ask for nothing.
func TestBridgeOptions(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	n := newNode(t)
	list := bridgeConf(t, "opts", "nftables", "10.99.0.0/24", map[string]any{
		"bridge": "ndopts0", "mtu": 1400, "hairpinMode": false, "isDefaultGateway": false,
		"vlan": 0, "vlanTrunk": []any{}, "macspoofchk": false, "disableContainerInterface": false})
	c := n.attach(t, list, nil)
	if mtu := nettest.Link(t, c.ns, "eth0").Attrs().MTU; mtu != 1400 {
		t.Errorf("eth0 MTU = %d", mtu)
	}
	if containerHasDefault(t, c.ns, false) != 0 {
		t.Error("default route added with isDefaultGateway false")
	}
	if got := nettest.Addrs(t, n.host, "ndopts0"); len(got) != 1 || got[0].String() != "10.99.0.1/24" {
		t.Errorf("bridge addresses = %v", got)
	}
	nl := n.host.NL(t)
	pi, err := nl.LinkGetProtinfo(nettest.Link(t, n.host, c.res.Interfaces[1].Name))
	if err != nil || pi.Hairpin {
		t.Errorf("hairpin = %v (%v), want off", pi.Hairpin, err)
	}
	n.cni.MustCheck(t, list, c.rt)
	n.detach(t, list, c)

	// DNS: the config's "dns" is returned; the runtime's dns capability wins.
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(resolv, []byte("nameserver 192.0.2.53\nsearch ipam.example\n"), 0o644)
	dnsList := bridgeConf(t, "dns", "nftables", "10.99.2.0/24", map[string]any{"ipam": map[string]any{"resolvConf": resolv}})
	d := n.attach(t, dnsList, nil)
	if ns := d.res.DNS.Nameservers; len(ns) != 1 || ns[0] != "192.0.2.53" {
		t.Errorf("resolvConf DNS = %+v", d.res.DNS)
	}
	n.detach(t, dnsList, d)
	dnsList = bridgeConf(t, "dns", "nftables", "10.99.2.0/24", map[string]any{"dns": map[string]any{"nameservers": []string{"192.0.2.54"}},
		"capabilities": map[string]bool{"dns": true}})
	d = n.attach(t, dnsList, nil)
	if ns := d.res.DNS.Nameservers; len(ns) != 1 || ns[0] != "192.0.2.54" {
		t.Errorf("config DNS = %+v", d.res.DNS)
	}
	n.detach(t, dnsList, d)
	ns := nettest.NewNS(t)
	rt := nettest.Runtime(t, ns, "eth0")
	rt.CapabilityArgs = map[string]any{"dns": map[string]any{"servers": []string{"192.0.2.55"}, "searches": []string{"pod.example"}}}
	got, err := current.NewResultFromResult(n.cni.MustAdd(t, dnsList, rt))
	if err != nil || len(got.DNS.Nameservers) != 1 || got.DNS.Nameservers[0] != "192.0.2.55" || got.DNS.Search[0] != "pod.example" {
		t.Errorf("runtime DNS = %+v (%v)", got.DNS, err)
	}
	n.cni.MustDel(t, dnsList, rt)

	// args.cni.mac and args.cni.ips (the args convention).
	argsList := bridgeConf(t, "args", "nftables", "10.99.3.0/24", map[string]any{
		"args": map[string]any{"cni": map[string]any{"mac": "02:00:00:00:03:07", "ips": []string{"10.99.3.7"}}}})
	a := n.attach(t, argsList, nil)
	if a.addr(false) != "10.99.3.7" || nettest.Link(t, a.ns, "eth0").Attrs().HardwareAddr.String() != "02:00:00:00:03:07" {
		t.Errorf("args.cni: address %s, MAC %s", a.addr(false), nettest.Link(t, a.ns, "eth0").Attrs().HardwareAddr)
	}
	n.detach(t, argsList, a)

	l2 := bridgeConf(t, "l2", "nftables", "10.99.1.0/24", map[string]any{"isGateway": false})
	c2 := n.attach(t, l2, nil)
	if got := nettest.Addrs(t, n.host, defaultBridge("l2")); len(got) != 0 {
		t.Errorf("isGateway false: bridge has %v", got)
	}
	n.detach(t, l2, c2)
}

// TestBridgeSecondAdd: a second ADD of a live attachment (same container
// ID and ifname, no DEL between) fails before it changes anything: the
// first keeps its record, address, rules and port, which still serves and
// which nobody else can take. With the built-in allocator, which refuses
// a repeat itself, and with a delegated one (static) that does not.
func TestBridgeSecondAdd(t *testing.T) {
	nettest.RequireRoot(t)
	for _, ipamType := range []string{"host-local", "static"} {
		t.Run(ipamType, func(t *testing.T) {
			t.Parallel()
			n := newNode(t)
			n.cni = nettest.NewCNI(t, n.host, nettest.Bins(t), nettest.RefBins(t))
			list := bridgeConf(t, "again", "nftables", "10.20.9.0/24", nil)
			if ipamType == "static" {
				list = nettest.ConfList(t, map[string]any{"cniVersion": "1.0.0", "name": "again", "plugins": []any{map[string]any{
					"type": "host-local-bridge", "capabilities": map[string]bool{"portMappings": true},
					"ipam": map[string]any{"type": "static", "addresses": []any{map[string]any{"address": "10.20.9.5/24", "gateway": "10.20.9.1"}}},
				}}})
			}
			a := n.attach(t, list, ports("tcp//8080/80"))
			t.Cleanup(func() { n.detach(t, list, a) })
			nettest.Listen(t, a.ns, "tcp", ":80", "A")
			before, files := n.hostState(t), nettest.StateFiles(t, n.cni.StateDir)

			_, err := n.cni.AddNetworkList(context.Background(), list, a.rt)
			if err == nil {
				t.Fatal("second ADD succeeded")
			}
			if nettest.Code(err) != 7 || !strings.Contains(err.Error(), "attached twice") {
				t.Errorf("second ADD = %v, want code 7 saying the container is attached twice", err)
			}
			if d := nettest.DiffLines(before, n.hostState(t)); d != "" {
				t.Errorf("the refused ADD changed the node:\n%s", d)
			}
			if got := nettest.StateFiles(t, n.cni.StateDir); strings.Join(got, ",") != strings.Join(files, ",") {
				t.Errorf("state %v -> %v", files, got)
			}
			wantFrom(t, n.outside, "tcp", lanNode+":8080", "A ")
			n.cni.MustCheck(t, list, a.rt)
			if ipamType == "host-local" {
				if e := storeEntries(t, list); len(e) != 1 {
					t.Errorf("store %v, want the first ADD's entry", e)
				}
				b := nettest.Runtime(t, nettest.NewNS(t), "eth0")
				b.CapabilityArgs = map[string]any{"portMappings": ports("tcp//8080/80")}
				if _, err := n.cni.AddNetworkList(context.Background(), list, b); nettest.Code(err) != 101 {
					t.Errorf("another container's ADD of the same port = %v, want code 101", err)
					n.cni.DelNetworkList(context.Background(), list, b)
				}
			}
		})
	}
}

// TestBridgeUnreportableResult: an L2-only network (no IPAM) at cniVersion
// 0.2.0, or with none (0.1.0), makes a result those versions cannot carry:
// ADD fails with code 1 and takes the attachment back.
func TestBridgeUnreportableResult(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	n := newNode(t)
	plugin := map[string]any{"type": "host-local-bridge", "bridge": "ndl2old0"}
	// The bridge and the network's rules stay after a DEL, as they should.
	n.warm(t, nettest.ConfList(t, map[string]any{"cniVersion": "1.0.0", "name": "l2old", "plugins": []any{plugin}}))
	before, files := n.hostState(t), nettest.StateFiles(t, n.cni.StateDir)
	for _, ver := range []string{"0.2.0", ""} {
		conf := map[string]any{"name": "l2old", "plugins": []any{plugin}}
		if ver != "" {
			conf["cniVersion"] = ver
		}
		list := nettest.ConfList(t, conf)
		c := nettest.NewNS(t)
		rt := nettest.Runtime(t, c, "eth0")
		_, err := n.cni.AddNetworkList(context.Background(), list, rt)
		if nettest.Code(err) != 1 || !strings.Contains(err.Error(), "no valid IP") {
			t.Errorf("%q: ADD = %v, want code 1 (no address to report)", ver, err)
		}
		if _, err := c.NL(t).LinkByName("eth0"); err == nil {
			t.Errorf("%q: the failed ADD left eth0 in the container", ver)
		}
		if d := nettest.DiffLines(before, n.hostState(t)); d != "" {
			t.Errorf("%q: the failed ADD changed the node:\n%s", ver, d)
		}
		if got := nettest.StateFiles(t, n.cni.StateDir); strings.Join(got, ",") != strings.Join(files, ",") {
			t.Errorf("%q: state %v -> %v", ver, files, got)
		}
		n.cni.MustDel(t, list, rt)
	}
}
