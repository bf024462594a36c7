package ipam

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// Interop with the reference host-local binary (containernetworking/plugins
// v1.9.1, built from the module proxy) on one data directory: neither ever
// hands out an address the other holds, each releases and checks what the
// other made, and our index never confuses the reference's walk.

// refHostLocal runs the reference binary once, as a runtime would.
func refHostLocal(t *testing.T, c *Config, verb, id string) ([]byte, error) {
	t.Helper()
	bin := filepath.Join(nettest.RefBins(t), "host-local")
	cmd := exec.Command(bin)
	cmd.Stdin = bytes.NewReader(c.stdin)
	cmd.Env = []string{"CNI_COMMAND=" + verb, "CNI_CONTAINERID=" + id, "CNI_IFNAME=eth0",
		"CNI_NETNS=/proc/self/ns/net", "CNI_NETNS_OVERRIDE=1", "CNI_PATH=" + filepath.Dir(bin)}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("reference host-local %s %s: %w: %s %s", verb, id, err, out, stderr.String())
	}
	return out, nil
}

func refAdd(t *testing.T, c *Config, id string) *current.Result {
	t.Helper()
	out, err := refHostLocal(t, c, "ADD", id)
	if err != nil {
		t.Fatal(err)
	}
	r, err := version.NewResult("1.0.0", out)
	if err != nil {
		t.Fatal(err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestInteropInterleaved(t *testing.T) {
	t.Parallel()
	c := builtin(t, map[string]any{"subnet": "10.40.0.0/24"})
	ctx := context.Background()
	results := map[string]*current.Result{}
	var order []string
	for i := range 20 {
		id := fmt.Sprintf("c%d", i)
		if i%2 == 0 {
			results[id] = refAdd(t, c, id)
		} else {
			res, err := Allocate(ctx, c, key(id))
			if err != nil {
				t.Fatal(err)
			}
			results[id] = res
		}
		order = append(order, results[id].IPs[0].Address.IP.String())
	}
	// One round-robin sequence, each side continuing from the other's
	// last_reserved_ip: .2, .3, ... .21.
	for i, ip := range order {
		if want := fmt.Sprintf("10.40.0.%d", i+2); ip != want {
			t.Fatalf("allocation %d = %s, want %s (sequence %v)", i, ip, want, order)
		}
	}
	for i := range 20 {
		id := fmt.Sprintf("c%d", i)
		if _, err := refHostLocal(t, c, "CHECK", id); err != nil {
			t.Errorf("reference CHECK of %s: %v", id, err)
		}
		if err := Check(ctx, c, key(id), results[id]); err != nil {
			t.Errorf("our CHECK of %s: %v", id, err)
		}
		if got, err := Addresses(ctx, c, key(id)); err != nil || len(got) != 1 || got[0].Addr().String() != order[i] {
			t.Errorf("Addresses(%s) = %v, %v; want %s", id, got, err, order[i])
		}
	}
	// Each side releases what the other made.
	for i := range 20 {
		id := fmt.Sprintf("c%d", i)
		var err error
		if i%2 == 0 {
			err = Release(ctx, c, key(id))
		} else {
			_, err = refHostLocal(t, c, "DEL", id)
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := refHostLocal(t, c, "CHECK", id); err == nil {
			t.Errorf("reference CHECK of %s passes after DEL", id)
		}
		if err := Check(ctx, c, key(id), results[id]); err == nil {
			t.Errorf("our CHECK of %s passes after DEL", id)
		}
	}
	for name := range storeFiles(t, c) {
		if !strings.HasPrefix(name, lastIPPrefix) {
			t.Errorf("left after crossed DELs: %s", name)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(netDir(c), indexDirName))
	if len(ents) == 0 {
		t.Error("the reference's DELs removed our index")
	}
}

// TestInteropConcurrent races 8 reference processes and 8 of ours, 4
// allocations each, then releases crosswise, again all at once.
func TestInteropConcurrent(t *testing.T) {
	t.Parallel()
	c := builtin(t, map[string]any{"subnet": "10.41.0.0/25"})
	nettest.RefBins(t) // built before the race
	var wg sync.WaitGroup
	for p := range 8 {
		wg.Go(func() {
			if out, err := helper(t, c, "add", ids(fmt.Sprintf("our%d-", p), 4)...).CombinedOutput(); err != nil {
				t.Errorf("our helper %d: %v %s", p, err, out)
			}
		})
		wg.Go(func() {
			for _, id := range ids(fmt.Sprintf("ref%d-", p), 4) {
				if _, err := refHostLocal(t, c, "ADD", id); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	entries := map[string]string{}
	for name, content := range storeFiles(t, c) {
		if strings.HasPrefix(name, lastIPPrefix) {
			continue
		}
		if other, dup := entries[content]; dup {
			t.Errorf("%q holds both %s and %s", content, other, name)
		}
		entries[content] = name
	}
	if len(entries) != 64 {
		t.Fatalf("%d entries after 64 allocations: %v", len(entries), entries)
	}
	ctx := context.Background()
	for content, ip := range entries {
		id, _, _ := strings.Cut(content, "\r\n")
		if got, err := Addresses(ctx, c, key(id)); err != nil || len(got) != 1 || got[0].Addr() != netip.MustParseAddr(ip) {
			t.Errorf("Addresses(%s) = %v, %v; want %s", id, got, err, ip)
		}
	}
	for p := range 8 {
		wg.Go(func() {
			if out, err := helper(t, c, "del", ids(fmt.Sprintf("ref%d-", p), 4)...).CombinedOutput(); err != nil {
				t.Errorf("our helper %d: %v %s", p, err, out)
			}
		})
		wg.Go(func() {
			for _, id := range ids(fmt.Sprintf("our%d-", p), 4) {
				if _, err := refHostLocal(t, c, "DEL", id); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	for name := range storeFiles(t, c) {
		if !strings.HasPrefix(name, lastIPPrefix) {
			t.Errorf("left after crossed concurrent DELs: %s", name)
		}
	}
}

// TestInteropRequestedIP: an address the reference holds is refused to a
// static request of ours, naming the holder, and the other way round.
func TestInteropRequestedIP(t *testing.T) {
	t.Parallel()
	c := builtin(t, map[string]any{"subnet": "10.42.0.0/24"})
	refAdd(t, c, "refowner") // 10.42.0.2
	req := *c
	req.Requested = []netip.Addr{netip.MustParseAddr("10.42.0.2")}
	_, err := Allocate(context.Background(), &req, key("ours"))
	if err == nil || !strings.Contains(err.Error(), `10.42.0.2`) || !strings.Contains(err.Error(), `container "refowner" ifname "eth0"`) {
		t.Fatalf("static request of a reference-held address = %v", err)
	}
	if _, err := Allocate(context.Background(), c, key("ours")); err != nil { // 10.42.0.3
		t.Fatal(err)
	}
	conf := strings.Replace(string(c.stdin), `"ipam":{`, `"args":{"cni":{"ips":["10.42.0.3"]}},"ipam":{`, 1)
	c2, err := Load([]byte(conf), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := refHostLocal(t, c2, "ADD", "refsecond"); err == nil || !strings.Contains(err.Error(), "10.42.0.3") {
		t.Fatalf("reference static request of an address we hold = %v, want refused", err)
	}
}
