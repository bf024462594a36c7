package test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// backends are the firewall backends every bridge test runs with.
var backends = []string{"nftables", "iptables"}

// eachBackend runs fn for every firewall backend as a parallel subtest,
// each on a node of its own.
func eachBackend(t *testing.T, fn func(t *testing.T, n *node, backend string)) {
	nettest.RequireRoot(t)
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			fn(t, newNode(t), backend)
		})
	}
}

// node is a throwaway host namespace with an uplink to an "outside" client
// namespace (another host on the LAN), where plugins run as on a node.
type node struct {
	host, outside *nettest.NS
	cni           *nettest.CNI
	hostAddr      string // the node's LAN address
	outAddr       string // the outside client's address
}

const (
	lanNode    = "198.51.100.1"
	lanOutside = "198.51.100.2"
)

func newNode(t *testing.T) *node {
	t.Helper()
	host, outside := nettest.NewNS(t), nettest.NewNS(t)
	nettest.NewVeth(t, host, "ndup0", lanNode+"/24", outside, "eth0", lanOutside+"/24")
	nettest.AddAddr(t, host, "ndup0", "2001:db8:51::1/64")
	nettest.AddAddr(t, outside, "eth0", "2001:db8:51::2/64")
	nettest.AddRoute(t, outside, "default", lanNode)
	nettest.AddRoute(t, outside, "default", "2001:db8:51::1")
	return &node{host: host, outside: outside, cni: nettest.NewCNI(t, host), hostAddr: lanNode, outAddr: lanOutside}
}

// bridgeConf is a host-local-bridge conflist; extra keys override (overlay).
func bridgeConf(t *testing.T, name, backend string, subnet string, extra map[string]any) *libcni.NetworkConfigList {
	t.Helper()
	ipamConf := map[string]any{"type": "host-local", "dataDir": t.TempDir(), "subnet": subnet}
	plugin := map[string]any{
		"type": "host-local-bridge", "firewallBackend": backend, "ipam": ipamConf,
		"capabilities": map[string]bool{"portMappings": true, "ips": true, "mac": true},
	}
	return nettest.ConfList(t, map[string]any{"cniVersion": "1.0.0", "name": name, "plugins": []any{overlay(plugin, ipamConf, extra)}})
}

// container is an attached test container.
type container struct {
	ns  *nettest.NS
	rt  *libcni.RuntimeConf
	res *current.Result
}

func (c *container) addr(v6 bool) string {
	for _, ip := range c.res.IPs {
		if (ip.Address.IP.To4() == nil) == v6 {
			return ip.Address.IP.String()
		}
	}
	return ""
}

// attach runs ADD for a new container namespace; DEL is left to the test.
func (n *node) attach(t *testing.T, list *libcni.NetworkConfigList, ports []map[string]any) *container {
	t.Helper()
	ns := nettest.NewNS(t)
	rt := nettest.Runtime(t, ns, "eth0")
	if ports != nil {
		rt.CapabilityArgs = map[string]any{"portMappings": ports}
	}
	res, err := current.NewResultFromResult(n.cni.MustAdd(t, list, rt))
	if err != nil {
		t.Fatal(err)
	}
	return &container{ns: ns, rt: rt, res: res}
}

// warm attaches and detaches one container, so the network's bridge and
// the suite's shared rules exist before a test takes its "before" state.
func (n *node) warm(t *testing.T, list *libcni.NetworkConfigList) {
	t.Helper()
	n.detach(t, list, n.attach(t, list, nil))
}

func (n *node) detach(t *testing.T, list *libcni.NetworkConfigList, c *container) {
	t.Helper()
	n.cni.MustDel(t, list, c.rt)
}

// nodeHelper fails t unless a detached helper of the plugins (pkg/reexec)
// answers on the abstract socket addr in ns within 2 s.
func nodeHelper(t *testing.T, ns *nettest.NS, addr string) {
	t.Helper()
	nettest.Eventually(t, 2*time.Second, "a helper on "+addr, func() error {
		return ns.Do(func() error {
			f, err := net.Dial("unixpacket", addr)
			if err == nil {
				f.Close()
			}
			return err
		})
	})
}

// hostState is everything outside the container namespaces that a plugin
// may touch: links, addresses, routes, both packet filters, and the state
// dir, for "nothing left" comparisons.
func (n *node) hostState(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(nettest.Snapshot(t, n.host))
	b.WriteString("\n--- nft\n")
	b.WriteString(nftRules(t, n.host))
	b.WriteString("\n--- iptables\n")
	b.WriteString(iptRules(t, n.host))
	return b.String()
}

var counterRE = regexp.MustCompile(`counter packets \d+ bytes \d+`)

// nftRules lists the ruleset's rules and set elements, without handles.
func nftRules(t *testing.T, ns *nettest.NS) string {
	out, err := ns.Run("nft", "list", "ruleset")
	if err != nil {
		t.Fatalf("nft list ruleset: %v", err)
	}
	// One set element per line, so removing one element is one line; rule
	// counters (iptables-nft's) change with traffic, not with rules.
	out = strings.NewReplacer("elements = { ", "elements = {\n", ", ", ",\n", " }", "\n}").Replace(out)
	return counterRE.ReplaceAllString(out, "counter")
}

func iptRules(t *testing.T, ns *nettest.NS) string {
	var b strings.Builder
	for _, cmd := range []string{"iptables-save", "ip6tables-save", "iptables-legacy-save", "ip6tables-legacy-save"} {
		if _, err := exec.LookPath(cmd); err != nil {
			continue
		}
		out, err := ns.Run(cmd)
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "#") {
				continue // timestamps
			}
			// Counters change with traffic; the rules are what matter.
			if i := strings.Index(line, " ["); strings.HasPrefix(line, ":") && i > 0 {
				line = line[:i]
			}
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// storeEntries lists the address store of a network (files besides lock
// and last_reserved_ip.*).
func storeEntries(t *testing.T, list *libcni.NetworkConfigList) []string {
	t.Helper()
	var conf struct {
		IPAM struct {
			DataDir string `json:"dataDir"`
		} `json:"ipam"`
	}
	json.Unmarshal(list.Plugins[0].Bytes, &conf)
	out, _ := exec.Command("find", conf.IPAM.DataDir+"/"+list.Name, "-type", "f").Output()
	var entries []string
	for _, f := range strings.Fields(string(out)) {
		base := f[strings.LastIndex(f, "/")+1:]
		if base == "lock" || strings.HasPrefix(base, "last_reserved_ip") {
			continue
		}
		if _, err := netip.ParseAddr(base); err == nil {
			entries = append(entries, base)
		}
	}
	return entries
}

func ports(specs ...string) []map[string]any {
	var out []map[string]any
	for _, s := range specs { // "proto/hostIP/host/cont"
		var proto, hostIP string
		var hp, cp int
		parts := strings.Split(s, "/")
		proto, hostIP = parts[0], parts[1]
		fmt.Sscan(parts[2], &hp)
		fmt.Sscan(parts[3], &cp)
		m := map[string]any{"hostPort": hp, "containerPort": cp, "protocol": proto}
		if hostIP != "" {
			m["hostIP"] = hostIP
		}
		out = append(out, m)
	}
	return out
}

// gc execs the plugin's GC directly (libcni would first synthesise DELs
// from its cache, hiding what the plugin's own GC does).
func gc(t *testing.T, n *node, list *libcni.NetworkConfigList, valid ...*container) {
	t.Helper()
	if err := gcErr(t, n, list, valid...); err != nil {
		t.Fatalf("GC: %v", err)
	}
}

func gcErr(t *testing.T, n *node, list *libcni.NetworkConfigList, valid ...*container) error {
	t.Helper()
	conf := gcConf(t, list, valid...)
	stdin, _ := json.Marshal(conf)
	_, err := n.cni.Exec(t, conf["type"].(string), stdin, map[string]string{"CNI_COMMAND": "GC", "CNI_PATH": strings.Join(n.cni.Path, ":")})
	return err
}

// gcConf is the GC request of list's first plugin with valid attached.
func gcConf(t *testing.T, list *libcni.NetworkConfigList, valid ...*container) map[string]any {
	t.Helper()
	var conf map[string]any
	if err := json.Unmarshal(list.Plugins[0].Bytes, &conf); err != nil {
		t.Fatal(err)
	}
	atts := []types.GCAttachment{}
	for _, c := range valid {
		atts = append(atts, types.GCAttachment{ContainerID: c.rt.ContainerID, IfName: c.rt.IfName})
	}
	conf["cniVersion"], conf["name"] = "1.1.0", list.Name
	conf["cni.dev/valid-attachments"] = atts
	return conf
}

// assertHostNoIPv6: the host end of c's veth, a bridge port, has IPv6 off
// and no IPv6 address (veth.Spec.HostNoIPv6).
func assertHostNoIPv6(t *testing.T, n *node, c *container) {
	t.Helper()
	veth := c.res.Interfaces[1].Name
	if got := n.host.ReadSysctl(t, "net/ipv6/conf/"+veth+"/disable_ipv6"); got != "1" {
		t.Errorf("host veth %s: disable_ipv6 = %q, want 1", veth, got)
	}
	addrs, err := n.host.NL(t).AddrList(nettest.Link(t, n.host, veth), netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 0 {
		t.Errorf("host veth %s has IPv6 addresses %v", veth, addrs)
	}
}

// assertMACKept checks that link in ns carries want (unless "": no result
// names it) and that the kernel took its MAC as set by userspace, which
// udev's MACAddressPolicy leaves alone (a random MAC it would replace
// behind the result's back).
func assertMACKept(t *testing.T, ns *nettest.NS, link, want string) {
	t.Helper()
	if got := nettest.Link(t, ns, link).Attrs().HardwareAddr.String(); want != "" && got != want {
		t.Errorf("%s has MAC %s, want %s", link, got, want)
	}
	if got := ns.AddrAssignType(t, link); got != "3" {
		t.Errorf("%s: addr_assign_type = %s, want 3 (set by us, so udev keeps it)", link, got)
	}
}

// linkLocals are the IPv6 link-local addresses on link in ns (made by the
// kernel when the link comes up, unless addr_gen_mode is none).
func linkLocals(t *testing.T, ns *nettest.NS, link string) []string {
	t.Helper()
	addrs, err := ns.NL(t).AddrList(nettest.Link(t, ns, link), netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() {
			out = append(out, a.IP.String())
		}
	}
	return out
}
