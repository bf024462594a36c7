package test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// TestIPAMInteropMacvlan runs our macvlan (built-in host-local, no exec)
// and the reference macvlan + host-local binaries on one network: the same
// conflist, the same data directory, one parent link. Containers of both
// get distinct addresses and reach each other; each plugin CHECKs and
// DELs attachments whose store entries the other made; our GC releases the
// reference's entries of dead attachments; nothing is left.
func TestIPAMInteropMacvlan(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	ref := nettest.RefBins(t)
	host, out := nettest.NewNS(t), nettest.NewNS(t)
	parent := nettest.Name("ipx")
	nettest.NewVeth(t, host, parent, "", out, "eth0", "198.51.100.254/24")
	dataDir := t.TempDir()
	network := "ipx-" + nettest.RandHex(6)
	list := nettest.ConfList(t, map[string]any{"cniVersion": "1.1.0", "name": network, "plugins": []any{
		map[string]any{"type": "macvlan", "master": parent, "ipam": map[string]any{"type": "host-local",
			"dataDir": dataDir, "subnet": "198.51.100.0/24", "rangeStart": "198.51.100.10", "rangeEnd": "198.51.100.100"}},
	}})
	ours, theirs := nettest.NewCNI(t, host, nettest.Bins(t), ref), nettest.NewCNI(t, host, ref)
	before := nettest.Snapshot(t, host)

	type cont struct {
		ns  *nettest.NS
		rt  *libcni.RuntimeConf
		ip  string
		cni *nettest.CNI
	}
	var conts []*cont
	for i := range 6 {
		c := &cont{ns: nettest.NewNS(t), cni: ours}
		if i%2 == 0 {
			c.cni = theirs
		}
		c.rt = nettest.Runtime(t, c.ns, "eth0")
		res, err := current.NewResultFromResult(c.cni.MustAdd(t, list, c.rt))
		if err != nil {
			t.Fatal(err)
		}
		c.ip = res.IPs[0].Address.IP.String()
		if got := nettest.Addrs(t, c.ns, "eth0"); len(got) != 1 || got[0].Addr().String() != c.ip {
			t.Fatalf("container %d: eth0 has %v, result says %s", i, got, c.ip)
		}
		conts = append(conts, c)
	}
	var ips []string
	for _, c := range conts {
		ips = append(ips, c.ip)
	}
	if got := strings.Join(ips, " "); got != "198.51.100.10 198.51.100.11 198.51.100.12 198.51.100.13 198.51.100.14 198.51.100.15" {
		t.Fatalf("addresses %s: want one round-robin sequence across both plugins", got)
	}
	// Real traffic between a reference-attached and an our-attached container.
	nettest.Reachable(t, conts[0].ns, conts[1].ip)
	nettest.Reachable(t, conts[1].ns, conts[2].ip)
	for _, c := range conts {
		c.cni.MustCheck(t, list, c.rt)
	}

	// Crossed DEL: the reference releases an entry we made and we one it
	// made; each plugin's CHECK then sees the address gone.
	theirs.MustDel(t, list, conts[1].rt)
	if err := ours.CheckNetworkList(context.Background(), list, conts[1].rt); err == nil {
		t.Error("our CHECK passes after the reference DEL released the attachment")
	}
	ours.MustDel(t, list, conts[2].rt)
	if err := theirs.CheckNetworkList(context.Background(), list, conts[2].rt); err == nil {
		t.Error("reference CHECK passes after our DEL released the attachment")
	}
	// GC through our plugin: only conts[3] and conts[4] are still valid;
	// conts[0] (reference-made) and conts[5] (ours) go.
	valid := []types.GCAttachment{{ContainerID: conts[3].rt.ContainerID, IfName: "eth0"}, {ContainerID: conts[4].rt.ContainerID, IfName: "eth0"}}
	if err := ours.GCNetworkList(context.Background(), list, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
		t.Fatal(err)
	}
	if got := ipamStoreIPs(t, dataDir, network); !slices.Equal(got, []string{conts[3].ip, conts[4].ip}) {
		t.Errorf("store after GC = %v, want %s and %s", got, conts[3].ip, conts[4].ip)
	}
	for _, c := range conts {
		c.cni.MustDel(t, list, c.rt)
	}
	if got := ipamStoreIPs(t, dataDir, network); len(got) != 0 {
		t.Errorf("store entries left: %v", got)
	}
	if after := nettest.Snapshot(t, host); after != before {
		t.Errorf("host changed:\nbefore %s\nafter %s", before, after)
	}
}

func ipamStoreIPs(t *testing.T, dataDir, network string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dataDir, network))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() && e.Name() != "lock" && !strings.HasPrefix(e.Name(), "last_reserved_ip.") {
			out = append(out, e.Name())
		}
	}
	slices.Sort(out)
	return out
}
