package main

import (
	"fmt"
	"strings"
)

// Scenario is one network configuration benchmarked as a runtime uses it.
type Scenario struct {
	Name    string   // side/short-name
	Side    string   // "ours", "ref" or "floor"
	What    string   // one line for the report
	Plugins []string // binaries the list execs (all must exist in the side's dir)
	Ports   bool     // two published ports per attachment (portMappings)
	Kernel  bool     // the kernel floor: no plugin, veth add/del from Go
	Links   bool     // creates and deletes a link per attachment (DEL is compared with the kernel floor)
	Quick   bool     // part of --quick
	Ws      []int    // live attachments kept up while timing
	Twin    bool     // also timed in an empty node beside the C=1 round at the largest W (Twin)
	N       int      // timed ADDs (then CHECKs, DELs) per round
	plugins func(dataDir string) []map[string]any
}

// Container addresses come from a private /21: 2,046 addresses, enough
// for the largest W plus N.
const subnet = "10.99.0.0/21"

func hostLocal(dataDir string, defRoute bool) map[string]any {
	m := map[string]any{"type": "host-local", "dataDir": dataDir,
		"ranges": []any{[]any{map[string]any{"subnet": subnet}}}}
	if defRoute {
		m["routes"] = []any{map[string]any{"dst": "0.0.0.0/0"}}
	}
	return m
}

func ourBridge(backend string) func(string) []map[string]any {
	return func(dataDir string) []map[string]any {
		return []map[string]any{{"type": "host-local-bridge", "bridge": "ndb0",
			"firewallBackend": backend, "ipMasq": true,
			"capabilities": map[string]any{"portMappings": true},
			"ipam":         hostLocal(dataDir, false)}}
	}
}

// refBridge is the reference chain a Docker-like bridge needs: bridge with
// host-local and ipMasq, then portmap when ports are published. Both use
// the same firewall backend.
func refBridge(backend string, portmap bool) func(string) []map[string]any {
	return func(dataDir string) []map[string]any {
		l := []map[string]any{{"type": "bridge", "bridge": "cni-b0", "isGateway": true,
			"isDefaultGateway": true, "ipMasq": true, "ipMasqBackend": backend, "hairpinMode": true,
			"ipam": hostLocal(dataDir, false)}}
		if portmap {
			l = append(l, map[string]any{"type": "portmap", "backend": backend, "snat": true,
				"capabilities": map[string]any{"portMappings": true}})
		}
		return l
	}
}

func macvlan(dataDir string) []map[string]any {
	return []map[string]any{{"type": "macvlan", "master": uplink, "mode": "bridge",
		"ipam": hostLocal(dataDir, true)}}
}

func single(typ string) func(string) []map[string]any {
	return func(string) []map[string]any { return []map[string]any{{"type": typ}} }
}

// floorExec is the exec floor's scenario, floorExecEnd the same timed again
// after every other scenario; Report.summary gives the lower of the two.
const (
	floorExec    = "floor/exec"
	floorExecEnd = "floor/exec-end"
)

// scenarios lists every scenario of a full run, with W and N for it.
// W: ours 0, 500, 900; the reference 0 and 500 (it takes minutes to fill);
// plugins that make nothing on the node (none, loopback, the floors) only
// at 0, as W cannot change what they do. N + max W stays under the 1,023
// ports a Linux bridge holds.
func scenarios(quick bool) []Scenario {
	ours, ref, flat := []int{0, 500, 900}, []int{0, 500}, []int{0}
	n, refN := 100, 40
	if quick {
		ours, ref, n, refN = []int{0, 20}, []int{0}, 12, 8
	}
	return []Scenario{
		{Name: floorExec, Side: "floor", What: "no-op plugin: exec + result (the exec floor)",
			Plugins: []string{"noop"}, Quick: true, Ws: flat, N: n, plugins: single("noop")},
		{Name: "floor/kernel", Side: "floor", What: "bare veth add + delete from Go (the kernel floor)",
			Kernel: true, Links: true, Quick: true, Ws: flat, N: n},
		{Name: "ours/none", Side: "ours", What: "none", Plugins: []string{"none"},
			Quick: true, Ws: flat, N: n, plugins: single("none")},
		{Name: "ours/loopback", Side: "ours", What: "none installed as loopback",
			Plugins: []string{"loopback"}, Ws: flat, N: n, plugins: single("loopback")},
		{Name: "ours/bridge-nft", Side: "ours", Plugins: []string{"host-local-bridge"}, Ports: true, Quick: true, Links: true, Twin: true,
			What: "host-local-bridge, nftables, masquerade, 2 ports", Ws: ours, N: n, plugins: ourBridge("nftables")},
		{Name: "ours/bridge-ipt", Side: "ours", Plugins: []string{"host-local-bridge"}, Ports: true, Links: true,
			What: "host-local-bridge, iptables, masquerade, 2 ports", Ws: ours, N: n, plugins: ourBridge("iptables")},
		{Name: "ours/macvlan", Side: "ours", Plugins: []string{"macvlan"}, Quick: true, Links: true, Twin: true,
			What: "macvlan (veth parent), built-in host-local", Ws: ours, N: n, plugins: macvlan},
		{Name: "ref/bridge", Side: "ref", Plugins: []string{"bridge", "host-local"}, Links: true,
			What: "bridge + host-local, ipMasq (iptables)", Ws: ref, N: refN, plugins: refBridge("iptables", false)},
		{Name: "ref/bridge+portmap-ipt", Side: "ref", Plugins: []string{"bridge", "host-local", "portmap"}, Ports: true, Links: true,
			What: "bridge + host-local + portmap, iptables, 2 ports", Ws: ref, N: refN, plugins: refBridge("iptables", true)},
		{Name: "ref/bridge+portmap-nft", Side: "ref", Plugins: []string{"bridge", "host-local", "portmap"}, Ports: true, Links: true,
			Quick: true, What: "bridge + host-local + portmap, nftables, 2 ports", Ws: ref, N: refN, plugins: refBridge("nftables", true)},
		{Name: "ref/macvlan", Side: "ref", Plugins: []string{"macvlan", "host-local"}, Links: true,
			What: "macvlan (veth parent) + host-local", Ws: ref, N: refN, plugins: macvlan},
		{Name: "ref/loopback", Side: "ref", Plugins: []string{"loopback"}, What: "loopback",
			Ws: flat, N: n, plugins: single("loopback")},
	}
}

// conflist renders a scenario's network list.
func (s Scenario) conflist(dataDir string) map[string]any {
	name := "bench-" + strings.NewReplacer("/", "-", "+", "-").Replace(s.Name)
	return map[string]any{"cniVersion": "1.0.0", "name": name, "plugins": s.plugins(dataDir)}
}

// portMappings publishes two host ports (TCP and UDP) for the attachment
// in slot: timed slots from 20000, fill slots from 30000.
func portMappings(slot int, fill bool) []map[string]any {
	base := 20000 + 2*slot
	if fill {
		base = 30000 + 2*slot
	}
	return []map[string]any{
		{"hostPort": base, "containerPort": 53, "protocol": "tcp"},
		{"hostPort": base + 1, "containerPort": 53, "protocol": "udp"},
	}
}

func (s Scenario) String() string { return fmt.Sprintf("%s (%s)", s.Name, s.What) }
