package test

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// The hostile-input suite (issue 8): every plugin gets input that is
// wrong or malicious, answers with its CNI code and a message naming what
// is wrong, and changes nothing: not the node (links, addresses, routes,
// both packet filters), not the container, not the state dir, not the
// address store, not a mount.

// hostilePlugins are the binaries every case runs against.
var hostilePlugins = []string{"none", "host-local-bridge", "macvlan", "hostns", "joinns"}

const (
	hsUpNode = "198.51.100.1" // the node's uplink, also the macvlan master
	hsUpLAN  = "198.51.100.2"
	hsBridge = "10.77.0.0/24"
)

// hsNode is a throwaway node: an uplink veth (hsup0) to a LAN namespace,
// which is also the macvlan master, and a joinns target container.
type hsNode struct {
	host, lan, target *nettest.NS
	cni               *nettest.CNI
	dataDir           string
}

func newHsNode(t *testing.T) *hsNode {
	t.Helper()
	n := &hsNode{host: nettest.NewNS(t), lan: nettest.NewNS(t), target: nettest.NewNS(t), dataDir: t.TempDir()}
	nettest.NewVeth(t, n.host, "hsup0", hsUpNode+"/24", n.lan, "eth0", hsUpLAN+"/24")
	nettest.NewVeth(t, n.target, "eth0", "10.66.0.2/24", n.lan, "tgt0", "10.66.0.1/24")
	n.cni = nettest.NewCNI(t, n.host)
	// The kernel adds link-local addresses a moment after a link comes
	// up: wait for them, so that "nothing changed" states are stable.
	for _, l := range []struct {
		ns   *nettest.NS
		name string
	}{{n.host, "hsup0"}, {n.target, "eth0"}, {n.lan, "eth0"}, {n.lan, "tgt0"}} {
		waitLinkLocal(t, l.ns, l.name)
	}
	return n
}

// waitLinkLocal waits until the kernel has given link its IPv6
// link-local address, which it adds a moment after the link comes up.
func waitLinkLocal(t *testing.T, ns *nettest.NS, link string) {
	t.Helper()
	nettest.Eventually(t, 5*time.Second, "link-local address on "+link, func() error {
		addrs, err := ns.NL(t).AddrList(nettest.Link(t, ns, link), netlink.FAMILY_V6)
		if err != nil || len(addrs) == 0 {
			return fmt.Errorf("none yet (%v)", err)
		}
		return nil
	})
}

// conf is a one-plugin network config for plugin (cniVersion 1.1.0, the
// network named after the plugin); extra keys override, "ipam" merges.
func (n *hsNode) conf(plugin string, extra map[string]any) map[string]any {
	c := map[string]any{"cniVersion": "1.1.0", "name": "hs-" + plugin, "type": plugin}
	var ipamConf map[string]any
	switch plugin {
	case "host-local-bridge":
		ipamConf = map[string]any{"type": "host-local", "dataDir": n.dataDir, "subnet": hsBridge}
		c["firewallBackend"] = "nftables"
	case "macvlan":
		ipamConf = map[string]any{"type": "host-local", "dataDir": n.dataDir, "subnet": "198.51.100.0/24",
			"rangeStart": "198.51.100.10", "rangeEnd": "198.51.100.20"}
		c["master"] = "hsup0"
	case "hostns":
		c["allowHostNetwork"] = true
	case "joinns":
		c["target"] = n.target.Path()
	}
	if ipamConf != nil {
		c["ipam"] = ipamConf
	}
	return overlay(c, ipamConf, extra)
}

// env is a valid CNI environment for verb on cont, with overrides (an
// empty value deletes the variable).
func (n *hsNode) env(t *testing.T, verb string, cont *nettest.NS, kv ...string) map[string]string {
	m := map[string]string{"CNI_COMMAND": verb, "CNI_CONTAINERID": nettest.ID(t), "CNI_IFNAME": "eth0",
		"CNI_PATH": nettest.Bins(t)}
	if cont != nil {
		m["CNI_NETNS"] = cont.Path()
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(m, kv[i])
		} else {
			m[kv[i]] = kv[i+1]
		}
	}
	return m
}

// exec runs plugin directly, as a runtime without a result cache would.
// conf is marshalled unless it is already []byte.
func (n *hsNode) exec(t *testing.T, plugin string, conf any, env map[string]string) ([]byte, error) {
	t.Helper()
	stdin, ok := conf.([]byte)
	if !ok {
		var err error
		if stdin, err = json.Marshal(conf); err != nil {
			t.Fatal(err)
		}
	}
	return n.cni.Exec(t, plugin, stdin, env)
}

// files is what plugins keep on disk for attachments: the state dir's
// files and the address store's entries, with the content of each. The
// store's bookkeeping (lock, last_reserved_ip.*, the index) is left out:
// it may change on any call.
func (n *hsNode) files(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, dir := range []string{n.cni.StateDir, n.dataDir} {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			rel, _ := filepath.Rel(dir, p)
			if rel == "boot_id" || strings.HasPrefix(rel, "locks/") {
				return nil
			}
			if _, err := netip.ParseAddr(filepath.Base(rel)); dir == n.dataDir && err != nil {
				return nil
			}
			fmt.Fprintf(&b, "%s %s", rel, d.Type())
			if d.Type().IsRegular() {
				data, _ := os.ReadFile(p)
				fmt.Fprintf(&b, " %q", data)
			}
			b.WriteString("\n")
			return nil
		})
	}
	return b.String()
}

// quick is the state a refusal must not change, cheap enough for every
// case: the node's and the container's links, addresses and routes, the
// files, and the mounts on the container's path.
func (n *hsNode) quick(t *testing.T, cont *nettest.NS) string {
	t.Helper()
	s := nettest.Snapshot(t, n.host) + "\n--- target\n" + nettest.Snapshot(t, n.target) + "\n--- files\n" + n.files(t)
	if cont != nil {
		s += "\n--- container\n" + nettest.Snapshot(t, cont) + "\n" + strings.Join(nettest.Mounts(t, cont.Path()), "\n")
	}
	return s
}

// full is quick plus both packet filters and the policy rules of the node.
func (n *hsNode) full(t *testing.T) string {
	t.Helper()
	return nettest.NodeState(t, n.host) + "\n--- files\n" + n.files(t)
}

// unchanged fails t when the state differs from before, leaving out the
// IPv6 link-local addresses and routes the kernel adds on its own a
// moment after a link comes up.
func unchanged(t *testing.T, what, before, after string) {
	t.Helper()
	if d := stableDiff(before, after); d != "" {
		t.Errorf("%s changed:\n%s", what, d)
	}
}

// stableDiff is nettest.DiffLines without the kernel's link-local lines.
func stableDiff(before, after string) string {
	var out []string
	for _, l := range strings.Split(nettest.DiffLines(before, after), "\n") {
		if l != "" && !strings.Contains(l, "fe80:") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// wantCode fails t unless err is a CNI error with code whose message
// mentions each of says.
func wantCode(t *testing.T, err error, code uint, says ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("succeeded, want code %d", code)
	}
	if got := nettest.Code(err); got != code {
		t.Fatalf("code %d (%v), want %d", got, err, code)
	}
	for _, s := range says {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
}

// warm attaches and detaches one container on plugin's network, so that
// what stays after the last attachment (bridge, tables, the store dir) is
// in the "before" state.
func (n *hsNode) warm(t *testing.T, plugin string) { n.warmConf(t, plugin, n.conf(plugin, nil)) }

// warmConf is warm with a given config.
func (n *hsNode) warmConf(t *testing.T, plugin string, conf map[string]any) {
	t.Helper()
	cont := nettest.NewNS(t)
	env := n.env(t, "ADD", cont)
	if _, err := n.exec(t, plugin, conf, env); err != nil {
		t.Fatalf("warm-up ADD of %s: %v", plugin, err)
	}
	env["CNI_COMMAND"] = "DEL"
	if _, err := n.exec(t, plugin, conf, env); err != nil {
		t.Fatalf("warm-up DEL of %s: %v", plugin, err)
	}
}

// hostNSAllowed reports whether plugin may be given the node's own
// namespace as CNI_NETNS: hostns only reports then.
func hostNSAllowed(plugin string) bool { return plugin == "hostns" }

// rebinds reports whether plugin judges CNI_NETNS itself (code 103).
func rebinds(plugin string) bool { return slices.Contains([]string{"hostns", "joinns"}, plugin) }

// TestHostileEnv: a container ID or network name that would traverse the
// store and state dirs, a bad CNI_IFNAME, and a CNI_NETNS that is a file,
// a directory, the node's own namespace or not there: each plugin refuses
// with its code, changes nothing, and DEL with the same input is refused
// the same way (bad keys) or succeeds (bad namespace).
func TestHostileEnv(t *testing.T) {
	nettest.RequireRoot(t)
	for _, plugin := range hostilePlugins {
		t.Run(plugin, func(t *testing.T) {
			t.Parallel()
			n := newHsNode(t)
			if plugin != "none" && plugin != "joinns" {
				n.warm(t, plugin)
			}
			cont := nettest.NewNS(t)
			plain := filepath.Join(t.TempDir(), "plain")
			if err := os.WriteFile(plain, []byte("not a namespace"), 0o644); err != nil {
				t.Fatal(err)
			}
			full := n.full(t)
			// Traversals aim at a name of their own, looked for afterwards.
			trav := "nd-trav-" + nettest.RandHex(8)
			up := strings.Repeat("../", 12)
			nsCode := uint(8)
			if rebinds(plugin) {
				nsCode = 103
			}
			cases := []struct {
				name  string
				kv    []string // env overrides
				conf  map[string]any
				code  uint // 0: the plugin may accept it
				says  string
				delOK bool // DEL with the same input succeeds
			}{
				{"container ID with slash", []string{"CNI_CONTAINERID", "a/b"}, nil, 4, "CNI_CONTAINERID", false},
				{"container ID traversal", []string{"CNI_CONTAINERID", up + "tmp/" + trav}, nil, 4, "CNI_CONTAINERID", false},
				{"container ID dotdot", []string{"CNI_CONTAINERID", ".."}, nil, 4, "CNI_CONTAINERID", false},
				{"container ID dotdot inside", []string{"CNI_CONTAINERID", "x..y"}, nil, 4, "CNI_CONTAINERID", false},
				{"container ID over-long", []string{"CNI_CONTAINERID", strings.Repeat("c", 4096)}, nil, 4, "CNI_CONTAINERID", false},
				{"container ID option-like", []string{"CNI_CONTAINERID", "-rf"}, nil, 4, "CNI_CONTAINERID", false},
				{"container ID newline", []string{"CNI_CONTAINERID", "a\nb"}, nil, 4, "CNI_CONTAINERID", false},
				{"ifname 16 bytes", []string{"CNI_IFNAME", "eth0123456789012"}, nil, 4, "CNI_IFNAME", false},
				{"ifname 16 bytes of UTF-8", []string{"CNI_IFNAME", "ééééééééx"}, nil, 4, "CNI_IFNAME", false},
				{"ifname slash", []string{"CNI_IFNAME", "../x"}, nil, 4, "CNI_IFNAME", false},
				{"ifname colon", []string{"CNI_IFNAME", "eth0:1"}, nil, 4, "CNI_IFNAME", false},
				{"ifname dot", []string{"CNI_IFNAME", "."}, nil, 4, "CNI_IFNAME", false},
				{"ifname space", []string{"CNI_IFNAME", "eth 0"}, nil, 4, "CNI_IFNAME", false},
				{"network name traversal", nil, map[string]any{"name": up + "tmp/" + trav}, 7, "network name", false},
				{"ifname traversal", []string{"CNI_IFNAME", "../" + trav[:8]}, nil, 4, "CNI_IFNAME", false},
				{"network name slash", nil, map[string]any{"name": "a/b"}, 7, "network name", false},
				{"network name NUL", nil, map[string]any{"name": "a\x00b"}, 7, "network name", false},
				{"network name over-long", nil, map[string]any{"name": strings.Repeat("n", 300)}, 7, "network name", false},
				{"netns regular file", []string{"CNI_NETNS", plain}, nil, nsCode, "not a network namespace", true},
				{"netns directory", []string{"CNI_NETNS", t.TempDir()}, nil, nsCode, "not a network namespace", true},
				{"netns missing", []string{"CNI_NETNS", "/run/netns/hs-gone-" + nettest.RandHex(6)}, nil, nsCode, "does not exist", true},
				{"netns of another type", []string{"CNI_NETNS", "/proc/self/ns/mnt"}, nil, nsCode, "", true},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					before := n.quick(t, cont)
					env := n.env(t, "ADD", cont, tc.kv...)
					_, err := n.exec(t, plugin, n.conf(plugin, tc.conf), env)
					wantCode(t, err, tc.code, tc.says)
					unchanged(t, "state after the refused ADD", before, n.quick(t, cont))
					env["CNI_COMMAND"] = "DEL"
					_, err = n.exec(t, plugin, n.conf(plugin, tc.conf), env)
					switch {
					case tc.delOK && err != nil:
						t.Errorf("DEL after the refused ADD: %v", err)
					case !tc.delOK && nettest.Code(err) != tc.code:
						t.Errorf("DEL with the same input = %v, want code %d", err, tc.code)
					}
					unchanged(t, "state after DEL", before, n.quick(t, cont))
				})
			}
			t.Run("netns is the node", func(t *testing.T) { hostileNodeNS(t, n, plugin) })
			unchanged(t, "node after every case", full, n.full(t))
			for _, dir := range []string{"/tmp", "/run", "/"} {
				if got, _ := filepath.Glob(filepath.Join(dir, trav+"*")); len(got) > 0 {
					t.Errorf("a traversal created %v", got)
				}
			}
		})
	}
}

// hostileNodeNS gives CNI_NETNS as the node's own namespace, by /proc path
// and by its pinned path, with CNI_IFNAME naming the node's uplink: ADD is
// refused (8, or 103 by joinns, which must never re-bind it), except by
// hostns, which only reports. DEL succeeds (the namespace counts as gone)
// or is refused with 8, and leaves the uplink alone.
func hostileNodeNS(t *testing.T, n *hsNode, plugin string) {
	for _, path := range []string{"/proc/self/ns/net", n.host.Path()} {
		before := n.full(t)
		env := n.env(t, "ADD", nil, "CNI_NETNS", path, "CNI_IFNAME", "hsup0")
		_, err := n.exec(t, plugin, n.conf(plugin, nil), env)
		switch {
		case hostNSAllowed(plugin):
			if err != nil {
				t.Errorf("%s: ADD with the node's namespace %s: %v", plugin, path, err)
			}
		case rebinds(plugin):
			wantCode(t, err, 103)
		default:
			wantCode(t, err, 8, "host")
		}
		env["CNI_COMMAND"] = "DEL"
		if _, err := n.exec(t, plugin, n.conf(plugin, nil), env); err != nil && nettest.Code(err) != 8 {
			t.Errorf("DEL with the node's namespace %s = %v, want success or code 8", path, err)
		}
		if d := stableDiff(before, n.full(t)); d != "" {
			t.Errorf("CNI_NETNS %s changed the node:\n%s", path, d)
		}
		if got := hnNSID(t, n.host.Path()); got != n.host.Handle().ID() {
			t.Fatalf("the node's pinned path %s was re-bound", n.host.Path())
		}
	}
}
