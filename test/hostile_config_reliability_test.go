package test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// ipamPlugins are the plugins with the built-in host-local allocator.
var ipamPlugins = []string{"host-local-bridge", "macvlan"}

// noRange drops the default subnet and range of hsNode.conf's ipam.
var noRange = map[string]any{"subnet": nil, "rangeStart": nil, "rangeEnd": nil}

func ipamWith(kv ...any) map[string]any {
	m := map[string]any{}
	for k, v := range noRange {
		m[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return map[string]any{"ipam": m}
}

func rng(subnet string, kv ...string) map[string]any {
	r := map[string]any{"subnet": subnet}
	for i := 0; i+1 < len(kv); i += 2 {
		r[kv[i]] = kv[i+1]
	}
	return r
}

// TestHostileRanges: overlapping, inverted, out-of-subnet and malformed
// ranges, and a gateway outside its subnet, are refused with 7 naming the
// value, before anything changes.
func TestHostileRanges(t *testing.T) {
	nettest.RequireRoot(t)
	cases := []struct {
		name  string
		extra map[string]any
		says  string
	}{
		{"overlapping range sets", ipamWith("ranges", [][]any{{rng("10.78.0.0/24")}, {rng("10.78.0.0/25")}}), "overlaps"},
		{"overlapping ranges in a set", ipamWith("ranges", [][]any{{rng("10.78.0.0/24"), rng("10.78.0.128/25")}}), "overlap"},
		{"rangeStart after rangeEnd", ipamWith("subnet", "10.78.0.0/24", "rangeStart", "10.78.0.50", "rangeEnd", "10.78.0.10"), "after"},
		{"rangeStart outside the subnet", ipamWith("subnet", "10.78.0.0/24", "rangeStart", "10.79.0.5"), "10.79.0.5"},
		{"gateway outside the subnet", ipamWith("subnet", "10.78.0.0/24", "gateway", "10.2.0.1"), "10.2.0.1"},
		{"gateway outside in ranges", ipamWith("ranges", [][]any{{rng("10.78.0.0/24", "gateway", "192.0.2.1")}}), "192.0.2.1"},
		{"prefix over 32", ipamWith("subnet", "10.78.0.0/33"), "10.78.0.0/33"},
		{"host bits set", ipamWith("subnet", "10.78.0.7/24"), "host bits"},
		{"subnet too small", ipamWith("subnet", "10.78.0.0/31"), "too small"},
		{"not a CIDR", ipamWith("subnet", "10.78.0.0"), "10.78.0.0"},
		{"IPv4-mapped", ipamWith("subnet", "::ffff:10.78.0.0/120"), "mapped"},
		{"empty ranges", ipamWith("ranges", [][]any{}), "ranges"},
		{"empty range set", ipamWith("ranges", [][]any{{}}), "empty"},
		{"families mixed in a set", ipamWith("ranges", [][]any{{rng("10.78.0.0/24"), rng("fd00:78::/64")}}), ""},
		{"no ranges at all", ipamWith(), "no IP ranges"},
	}
	for _, plugin := range ipamPlugins {
		t.Run(plugin, func(t *testing.T) {
			t.Parallel()
			n := newHsNode(t)
			n.warm(t, plugin)
			cont := nettest.NewNS(t)
			full := n.full(t)
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					before := n.quick(t, cont)
					_, err := n.exec(t, plugin, n.conf(plugin, tc.extra), n.env(t, "ADD", cont))
					wantCode(t, err, 7, tc.says)
					unchanged(t, "state after the refused ADD", before, n.quick(t, cont))
				})
			}
			unchanged(t, "node after every case", full, n.full(t))
		})
	}
}

// hsAttach runs ADD of plugin for a new container, returning its result.
func (n *hsNode) attach(t *testing.T, plugin string, conf map[string]any, kv ...string) (*nettest.NS, map[string]string, *current.Result) {
	t.Helper()
	cont := nettest.NewNS(t)
	env := n.env(t, "ADD", cont, kv...)
	out, err := n.exec(t, plugin, conf, env)
	if err != nil {
		t.Fatalf("ADD %s: %v", plugin, err)
	}
	var res current.Result
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("ADD %s result: %v\n%s", plugin, err, out)
	}
	return cont, env, &res
}

// detach runs DEL with the environment ADD had.
func (n *hsNode) detach(t *testing.T, plugin string, conf map[string]any, env map[string]string) {
	t.Helper()
	del := map[string]string{}
	for k, v := range env {
		del[k] = v
	}
	del["CNI_COMMAND"] = "DEL"
	if _, err := n.exec(t, plugin, conf, del); err != nil {
		t.Fatalf("DEL %s: %v", plugin, err)
	}
}

// TestHostilePool: a full pool is 100 and a static IP another container
// holds is 7; either leaves nothing, and the holder keeps its address.
func TestHostilePool(t *testing.T) {
	nettest.RequireRoot(t)
	for _, plugin := range ipamPlugins {
		t.Run(plugin, func(t *testing.T) {
			t.Parallel()
			n := newHsNode(t)
			one := map[string]any{"ipam": map[string]any{"rangeStart": "198.51.100.30", "rangeEnd": "198.51.100.30"}}
			if plugin == "host-local-bridge" {
				one = map[string]any{"ipam": map[string]any{"rangeStart": "10.77.0.30", "rangeEnd": "10.77.0.30"}}
			}
			conf := n.conf(plugin, one)
			n.warm(t, plugin)
			full := n.full(t)
			holder, holderEnv, res := n.attach(t, plugin, conf)
			held := res.IPs[0].Address.IP.String()
			cont := nettest.NewNS(t)
			before := n.quick(t, cont)

			_, err := n.exec(t, plugin, conf, n.env(t, "ADD", cont))
			wantCode(t, err, 100, "exhausted")
			unchanged(t, "state after ADD on a full pool", before, n.quick(t, cont))

			dup := n.conf(plugin, map[string]any{"ipam": one["ipam"], "capabilities": map[string]bool{"ips": true},
				"runtimeConfig": map[string]any{"ips": []string{held}}})
			_, err = n.exec(t, plugin, dup, n.env(t, "ADD", cont))
			wantCode(t, err, 7, held)
			_, err = n.exec(t, plugin, conf, n.env(t, "ADD", cont, "CNI_ARGS", "IP="+held))
			wantCode(t, err, 7, held)
			unchanged(t, "state after ADDs of a held static IP", before, n.quick(t, cont))

			if got := nettest.Addrs(t, holder, "eth0"); len(got) != 1 || got[0].Addr().String() != held {
				t.Errorf("holder's addresses = %v, want %s", got, held)
			}
			n.detach(t, plugin, conf, holderEnv)
			unchanged(t, "node after the holder's DEL", full, n.full(t))
		})
	}
}

// portMappings returns count mappings from host port first on.
func portMappings(first, count int) []map[string]any {
	out := make([]map[string]any, count)
	for i := range out {
		out[i] = map[string]any{"hostPort": (first+i-1)%65535 + 1, "containerPort": 80, "protocol": "tcp"}
	}
	return out
}

// TestHostilePorts: 10,000 and MaxPortMappings+1 port mappings are refused
// with 7 naming the limit (joinns refuses any with 2); exactly
// MaxPortMappings are served, and DEL removes them all. host-local-bridge
// runs with both firewall backends.
func TestHostilePorts(t *testing.T) {
	nettest.RequireRoot(t)
	for _, variant := range []string{"host-local-bridge", "host-local-bridge/iptables", "hostns", "joinns"} {
		t.Run(variant, func(t *testing.T) {
			t.Parallel()
			plugin, backend, _ := strings.Cut(variant, "/")
			n := newHsNode(t)
			withPorts := func(count int) map[string]any {
				extra := map[string]any{"capabilities": map[string]bool{"portMappings": true},
					"runtimeConfig": map[string]any{"portMappings": portMappings(20000, count)}}
				if backend != "" {
					extra["firewallBackend"] = backend
				}
				return n.conf(plugin, extra)
			}
			if plugin != "joinns" {
				n.warmConf(t, plugin, withPorts(0))
			}
			cont := nettest.NewNS(t)
			full := n.full(t)
			for _, count := range []int{10000, netconf.MaxPortMappings + 1} {
				before := n.quick(t, cont)
				_, err := n.exec(t, plugin, withPorts(count), n.env(t, "ADD", cont))
				if plugin == "joinns" {
					wantCode(t, err, 2, "portMappings")
				} else {
					wantCode(t, err, 7, "portMappings", fmt.Sprint(netconf.MaxPortMappings))
				}
				unchanged(t, fmt.Sprintf("state after %d mappings", count), before, n.quick(t, cont))
			}
			switch {
			case backend == "iptables":
				// Correct, not fast: every mapping is a few rules through
				// iptables-restore, about a minute for the full limit on
				// a loaded 2-core VM, too slow for this suite.
				servesAllPorts(t, n, plugin, withPorts(64), 64)
			case plugin != "joinns":
				servesAllPorts(t, n, plugin, withPorts(netconf.MaxPortMappings), netconf.MaxPortMappings)
			}
			unchanged(t, "node after every case", full, n.full(t))
		})
	}
}

// servesAllPorts: ADD with count mappings (up to the documented maximum)
// succeeds and publishes the last one; DEL (also after a failed ADD)
// leaves nothing.
func servesAllPorts(t *testing.T, n *hsNode, plugin string, conf map[string]any, count int) {
	t.Helper()
	cont := nettest.NewNS(t)
	env := n.env(t, "ADD", cont)
	last := fmt.Sprint(20000 + count - 1)
	if _, err := n.exec(t, plugin, conf, env); err != nil {
		t.Errorf("ADD with %d port mappings (limit %d): code %d: %v", count, netconf.MaxPortMappings, nettest.Code(err), err)
	} else if plugin == "host-local-bridge" {
		rules := n.host.MustRun(t, "nft", "list", "ruleset") + n.host.MustRun(t, "iptables-save")
		if !strings.Contains(rules, last) {
			t.Errorf("host port %s, the last of %d mappings, is not in the ruleset", last, count)
		}
	}
	n.detach(t, plugin, conf, env)
}

// TestHostileHugeJSON: a config over netconf.MaxConfigSize, and one nested
// deeper than any decoder follows, are refused with 6 by every plugin; a
// config of a few MiB under the limit (an unknown padding field) works.
func TestHostileHugeJSON(t *testing.T) {
	nettest.RequireRoot(t)
	for _, plugin := range hostilePlugins {
		t.Run(plugin, func(t *testing.T) {
			t.Parallel()
			n := newHsNode(t)
			if plugin != "none" && plugin != "joinns" {
				n.warm(t, plugin)
			}
			cont := nettest.NewNS(t)
			full := n.full(t)
			padded := func(size int) []byte {
				conf := n.conf(plugin, map[string]any{"padding": strings.Repeat("x", size)})
				b, err := json.Marshal(conf)
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
			deep, _ := json.Marshal(n.conf(plugin, nil))
			deep = append(deep[:len(deep)-1], []byte(`,"nest":`+strings.Repeat("[", 200000)+strings.Repeat("]", 200000)+"}")...)
			for _, tc := range []struct {
				name  string
				stdin []byte
				says  string
			}{
				{"5 MiB", padded(5 << 20), fmt.Sprint(netconf.MaxConfigSize)},
				{"200,000 levels deep", deep, ""},
			} {
				before := n.quick(t, cont)
				_, err := n.exec(t, plugin, tc.stdin, n.env(t, "ADD", cont))
				t.Run(tc.name, func(t *testing.T) { wantCode(t, err, 6, tc.says) })
				unchanged(t, "state after "+tc.name, before, n.quick(t, cont))
			}
			env := n.env(t, "ADD", cont)
			big := padded(3 << 20)
			if _, err := n.exec(t, plugin, big, env); err != nil {
				t.Errorf("ADD with a 3 MiB config: %v", err)
			}
			env["CNI_COMMAND"] = "DEL"
			if _, err := n.exec(t, plugin, big, env); err != nil {
				t.Errorf("DEL with a 3 MiB config: %v", err)
			}
			unchanged(t, "node after every case", full, n.full(t))
		})
	}
}

// TestHostileDelAfterRefusedAdd: a runtime calls DEL after every ADD, also
// a refused one, with the same config (CNI spec; containerd retries a
// failed DEL until it succeeds, and a pod whose DEL keeps failing cannot
// be removed). DEL of a config that ADD refused must succeed and leave
// nothing.
func TestHostileDelAfterRefusedAdd(t *testing.T) {
	nettest.RequireRoot(t)
	ports := func(count int) map[string]any {
		return map[string]any{"runtimeConfig": map[string]any{"portMappings": portMappings(20000, count)}}
	}
	cases := map[string][]struct {
		name  string
		extra map[string]any
		code  uint
	}{
		"host-local-bridge": {
			{"10,000 port mappings", ports(10000), 7},
			{"bad gatewayMode", map[string]any{"gatewayMode": "bridged"}, 7},
			{"gateway outside the subnet", map[string]any{"ipam": map[string]any{"gateway": "10.2.0.1"}}, 7},
			{"multicast MAC", map[string]any{"runtimeConfig": map[string]any{"mac": "01:00:5e:00:00:01"}}, 7},
		},
		"macvlan": {
			{"bad mode", map[string]any{"mode": "bridg"}, 7},
			{"gateway outside the subnet", map[string]any{"ipam": map[string]any{"gateway": "10.2.0.1"}}, 7},
			{"multicast MAC", map[string]any{"runtimeConfig": map[string]any{"mac": "01:00:5e:00:00:01"}}, 7},
			{"MTU above the master's", map[string]any{"mtu": 9000}, 7},
		},
		"hostns": {
			{"10,000 port mappings", ports(10000), 7},
			{"no opt-in", map[string]any{"allowHostNetwork": nil}, 7},
		},
		"joinns": {
			{"port mappings", ports(1), 2},
			{"no target", map[string]any{"target": nil}, 7},
		},
	}
	for plugin, cs := range cases {
		t.Run(plugin, func(t *testing.T) {
			t.Parallel()
			n := newHsNode(t)
			if plugin != "joinns" {
				n.warm(t, plugin)
			}
			full := n.full(t)
			for _, tc := range cs {
				t.Run(tc.name, func(t *testing.T) {
					cont := nettest.NewNS(t)
					conf := n.conf(plugin, tc.extra)
					env := n.env(t, "ADD", cont)
					_, err := n.exec(t, plugin, conf, env)
					wantCode(t, err, tc.code)
					env["CNI_COMMAND"] = "DEL"
					if _, err := n.exec(t, plugin, conf, env); err != nil {
						t.Errorf("DEL after the refused ADD: code %d: %v", nettest.Code(err), err)
					}
				})
			}
			unchanged(t, "node after every case", full, n.full(t))
		})
	}
}
