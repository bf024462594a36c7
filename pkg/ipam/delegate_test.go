package ipam

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// delegateEnv sets what a runtime gives a plugin, so the delegate sees it.
// Process environment: these tests cannot run in parallel.
func delegateEnv(t *testing.T, key netconf.Key) {
	t.Setenv("CNI_PATH", nettest.RefBins(t))
	t.Setenv("CNI_CONTAINERID", key.ContainerID)
	t.Setenv("CNI_IFNAME", key.IfName)
	t.Setenv("CNI_NETNS", "/proc/self/ns/net") // neither delegate enters it
	t.Setenv("CNI_NETNS_OVERRIDE", "1")        // skel would refuse our own namespace after ADD
	t.Setenv("CNI_ARGS", "")
}

func mustLoad(t *testing.T, conf map[string]any) *Config {
	t.Helper()
	b, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load(b, nil)
	if err != nil {
		t.Fatalf("Load(%s): %v", b, err)
	}
	return c
}

func TestDelegateStatic(t *testing.T) {
	key := netconf.Key{Network: "dstatic", ContainerID: "c1", IfName: "eth0"}
	delegateEnv(t, key)
	c := mustLoad(t, map[string]any{"cniVersion": "1.1.0", "name": key.Network, "ipam": map[string]any{
		"type":      "static",
		"addresses": []any{map[string]any{"address": "192.0.2.10/24", "gateway": "192.0.2.1"}},
		"routes":    []any{map[string]any{"dst": "0.0.0.0/0"}},
	}})
	if c.Builtin() || c.Subnets() != nil || c.Gateways() != nil {
		t.Fatalf("static: Builtin=%v Subnets=%v Gateways=%v, want delegated with none", c.Builtin(), c.Subnets(), c.Gateways())
	}
	ctx := context.Background()
	res, err := Allocate(ctx, c, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IPs) != 1 || res.IPs[0].Address.String() != "192.0.2.10/24" || res.IPs[0].Gateway.String() != "192.0.2.1" {
		t.Fatalf("static result IPs = %+v, want 192.0.2.10/24 via 192.0.2.1", res.IPs)
	}
	if len(res.Routes) != 1 || res.Routes[0].Dst.String() != "0.0.0.0/0" {
		t.Errorf("static routes = %v, want the default route", res.Routes)
	}
	if addrs, err := Addresses(ctx, c, key); addrs != nil || err != nil {
		t.Errorf("Addresses of a delegated config = %v, %v; want nil, nil", addrs, err)
	}
	for _, step := range []struct {
		name string
		fn   func() error
	}{
		{"CHECK", func() error { return Check(ctx, c, key, res) }},
		{"STATUS", func() error { return Status(ctx, c) }},
		{"GC", func() error { return GC(ctx, c, nil) }},
		{"DEL", func() error { return Release(ctx, c, key) }},
		{"DEL again", func() error { return Release(ctx, c, key) }},
	} {
		if err := step.fn(); err != nil {
			t.Errorf("%s: %v", step.name, err)
		}
	}
}

func TestDelegateHostLocalBinary(t *testing.T) {
	key := netconf.Key{Network: "dhl", ContainerID: "c2", IfName: "eth1"}
	delegateEnv(t, key)
	dir := t.TempDir()
	conf := map[string]any{"cniVersion": "1.0.0", "name": key.Network, "ipam": map[string]any{
		"type": "host-local", "subnet": "198.51.100.0/29", "dataDir": dir,
	}}
	c := mustLoad(t, conf)
	c.Type = "host-local-ref" // force the exec path through a copy of the reference binary
	bin := t.TempDir()
	link(t, filepath.Join(nettest.RefBins(t), "host-local"), filepath.Join(bin, "host-local-ref"))
	t.Setenv("CNI_PATH", bin+string(os.PathListSeparator)+os.Getenv("CNI_PATH"))
	ctx := context.Background()
	res, err := Allocate(ctx, c, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IPs) != 1 || res.IPs[0].Address.String() != "198.51.100.2/29" {
		t.Fatalf("host-local result = %+v, want 198.51.100.2/29", res.IPs)
	}
	b, err := os.ReadFile(filepath.Join(dir, key.Network, "198.51.100.2"))
	if err != nil || string(b) != "c2\r\neth1" {
		t.Fatalf("store entry = %q, %v; want c2\\r\\neth1", b, err)
	}
	if err := Check(ctx, c, key, res); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := Release(ctx, c, key); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, key.Network, "198.51.100.2")); !os.IsNotExist(err) {
		t.Errorf("entry still there after DEL: %v", err)
	}
	// The reference host-local fails CHECK for an attachment it does not hold;
	// its error must come through.
	if err := Check(ctx, c, key, res); err == nil || !strings.Contains(err.Error(), "c2") {
		t.Errorf("CHECK after DEL = %v, want the delegate's error", err)
	}
}

func TestDelegateMissingPlugin(t *testing.T) {
	key := netconf.Key{Network: "dmiss", ContainerID: "c3", IfName: "eth0"}
	delegateEnv(t, key)
	c := mustLoad(t, map[string]any{"cniVersion": "1.0.0", "name": key.Network, "ipam": map[string]any{"type": "no-such-ipam"}})
	_, err := Allocate(context.Background(), c, key)
	if cnierr.CodeOf(err) != cnierr.InvalidConfig || !strings.Contains(err.Error(), "no-such-ipam") {
		t.Fatalf("Allocate with a missing delegate = %v (code %d), want code 7 naming it", err, cnierr.CodeOf(err))
	}
}

func link(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}
