package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// mvLAN is a macvlan test node: a "host" namespace whose parent link is a
// veth end, its peer in an "outside" namespace (another host on the same
// segment), as a node's eth0 is on its LAN.
type mvLAN struct {
	host, out *nettest.NS
	parent    string // the master, in host
	cni       *nettest.CNI
	dataDir   string
}

const (
	mvSubnet  = "192.0.2.0/24"
	mvHostIP  = "192.0.2.2"   // the node's own address on the parent
	mvOutIP   = "192.0.2.254" // the outside host
	mvSubnet6 = "2001:db8:4::/64"
	mvOutIP6  = "2001:db8:4::fe"
)

// newMvLAN builds the node; the host's parent carries mvHostIP when
// hostAddr is set (a real node's uplink has an address).
func newMvLAN(t *testing.T, hostAddr bool, dirs ...string) *mvLAN {
	t.Helper()
	host, out := nettest.NewNS(t), nettest.NewNS(t)
	parent := nettest.Name("mvp")
	addr := ""
	if hostAddr {
		addr = mvHostIP + "/24"
	}
	nettest.NewVeth(t, host, parent, addr, out, "eth0", mvOutIP+"/24")
	nettest.AddAddr(t, out, "eth0", mvOutIP6+"/64")
	// The kernel adds the parent's link-local address a moment after it
	// comes up: wait, so that "nothing changed" snapshots are stable.
	nettest.Eventually(t, 3*time.Second, "link-local address on "+parent, func() error {
		addrs, err := host.NL(t).AddrList(nettest.Link(t, host, parent), netlink.FAMILY_V6)
		if err != nil || len(addrs) == 0 {
			return fmt.Errorf("none yet (%v)", err)
		}
		return nil
	})
	return &mvLAN{host: host, out: out, parent: parent, cni: nettest.NewCNI(t, host, dirs...), dataDir: t.TempDir()}
}

// mvPlugin is a macvlan plugin config on the LAN's parent with the
// built-in host-local over mvSubnet; extra keys override ("ipam" merges,
// a nil value deletes).
func (l *mvLAN) mvPlugin(extra map[string]any) map[string]any {
	ipamConf := map[string]any{"type": "host-local", "dataDir": l.dataDir, "subnet": mvSubnet,
		"rangeStart": "192.0.2.10", "rangeEnd": "192.0.2.200"}
	return overlay(map[string]any{"type": "macvlan", "master": l.parent, "ipam": ipamConf}, ipamConf, extra)
}

func (l *mvLAN) list(t *testing.T, ver string, extra map[string]any) *libcni.NetworkConfigList {
	t.Helper()
	return nettest.ConfList(t, map[string]any{"cniVersion": ver, "name": "mv-" + nettest.RandHex(6),
		"plugins": []any{l.mvPlugin(extra)}})
}

// attach runs ADD for a new container namespace; DEL is the test's.
func (l *mvLAN) attach(t *testing.T, list *libcni.NetworkConfigList) *container {
	t.Helper()
	ns := nettest.NewNS(t)
	rt := nettest.Runtime(t, ns, "eth0")
	res, err := current.NewResultFromResult(l.cni.MustAdd(t, list, rt))
	if err != nil {
		t.Fatal(err)
	}
	return &container{ns: ns, rt: rt, res: res}
}

// stateFiles lists the files of the plugin state dir besides the boot
// marker and the lock files: what attachments own.
func (l *mvLAN) stateFiles(t *testing.T) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(l.cni.StateDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(l.cni.StateDir, p)
		if rel == "boot_id" || strings.HasPrefix(rel, "locks/") {
			return nil
		}
		out = append(out, rel)
		return nil
	})
	return out
}

// storeIPs lists the addresses held in the built-in/host-local store.
func (l *mvLAN) storeIPs(t *testing.T, network string) []string {
	t.Helper()
	entries, _ := os.ReadDir(filepath.Join(l.dataDir, network))
	var out []string
	for _, e := range entries {
		if _, err := netip.ParseAddr(e.Name()); err == nil {
			out = append(out, e.Name())
		}
	}
	return out
}

// assertClean fails t if the host changed from before, or state or store
// entries remain.
func (l *mvLAN) assertClean(t *testing.T, before string, network string) {
	t.Helper()
	if after := nettest.Snapshot(t, l.host); after != before {
		t.Errorf("host namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if f := l.stateFiles(t); len(f) > 0 {
		t.Errorf("state files left: %v", f)
	}
	if ips := l.storeIPs(t, network); len(ips) > 0 {
		t.Errorf("address store entries left: %v", ips)
	}
}

// mvLink returns the container's link, which must be a macvlan.
func mvLink(t *testing.T, ns *nettest.NS, name string) *netlink.Macvlan {
	t.Helper()
	l := nettest.Link(t, ns, name)
	mv, ok := l.(*netlink.Macvlan)
	if !ok {
		t.Fatalf("%s is a %s, want macvlan", name, l.Type())
	}
	return mv
}

// execMv runs the macvlan binary directly with a config and CNI_* env,
// as a runtime without a result cache would.
func (l *mvLAN) execMv(t *testing.T, verb string, conf map[string]any, c *container, extraEnv ...string) ([]byte, error) {
	t.Helper()
	stdin, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"CNI_COMMAND": verb, "CNI_PATH": strings.Join(l.cni.Path, ":")}
	if c != nil {
		env["CNI_CONTAINERID"], env["CNI_IFNAME"] = c.rt.ContainerID, c.rt.IfName
		if c.ns != nil {
			env["CNI_NETNS"] = c.ns.Path()
		}
	}
	for i := 0; i+1 < len(extraEnv); i += 2 {
		env[extraEnv[i]] = extraEnv[i+1]
	}
	return l.cni.Exec(t, "macvlan", stdin, env)
}

// mvGC execs GC with the given attachments valid.
func (l *mvLAN) mvGC(t *testing.T, list *libcni.NetworkConfigList, valid ...*container) error {
	t.Helper()
	_, err := l.execMv(t, "GC", gcConf(t, list, valid...), nil)
	return err
}

func mvStatus(l *mvLAN, list *libcni.NetworkConfigList) error {
	return l.cni.GetStatusNetworkList(context.Background(), list)
}

// hasMAC reports whether ns's neighbour table maps ip to mac.
func hasNeigh(t *testing.T, ns *nettest.NS, ip string, mac string) bool {
	t.Helper()
	neighs, err := ns.NL(t).NeighList(0, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	want := net.ParseIP(ip)
	return slices.ContainsFunc(neighs, func(n netlink.Neigh) bool {
		return n.IP.Equal(want) && n.HardwareAddr.String() == mac
	})
}

// shimLinks are the host shims (mvshim*) in the host namespace.
func (l *mvLAN) shimLinks(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, n := range nettest.LinkNames(t, l.host) {
		if strings.HasPrefix(n, "mvshim") {
			out = append(out, n)
		}
	}
	return out
}

// shim is the one host shim; the test fails without exactly one.
func (l *mvLAN) shim(t *testing.T) string {
	t.Helper()
	shims := l.shimLinks(t)
	if len(shims) != 1 {
		t.Fatalf("host links %v: want exactly one shim", nettest.LinkNames(t, l.host))
	}
	return shims[0]
}
