//go:build runtimes

package runtimes

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// writeConf writes a conflist into dir as <name>.conflist.
func writeConf(t *testing.T, dir, name string, body []byte) string {
	t.Helper()
	p := filepath.Join(dir, name+".conflist")
	if err := os.WriteFile(p, body, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// example returns the shipped conf-examples/<file>.conflist renamed to
// name, with set applied to its first plugin: only the fields a user sets
// (the macvlan parent) and the test's private ones (bridge name, ranges,
// the store under the work dir). A key of "ipam" set to a map is merged
// into the example's ipam; a nil value deletes the key.
func example(t *testing.T, file, name string, set map[string]any) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(nettest.RepoRoot(), "conf-examples", file+".conflist"))
	if err != nil {
		t.Fatal(err)
	}
	var conf map[string]any
	if err := json.Unmarshal(b, &conf); err != nil {
		t.Fatalf("conf-examples/%s.conflist: %v", file, err)
	}
	plugins, _ := conf["plugins"].([]any)
	if len(plugins) == 0 {
		t.Fatalf("conf-examples/%s.conflist has no plugins", file)
	}
	first := plugins[0].(map[string]any)
	merge(first, set)
	conf["name"] = name
	out, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// merge applies set onto m: nested maps merge, nil deletes.
func merge(m, set map[string]any) {
	for k, v := range set {
		switch v := v.(type) {
		case nil:
			delete(m, k)
		case map[string]any:
			sub, ok := m[k].(map[string]any)
			if !ok {
				sub = map[string]any{}
				m[k] = sub
			}
			merge(sub, v)
		default:
			m[k] = v
		}
	}
}

// ranges is an ipam "ranges" value: one range set per subnet (dual-stack
// when given a v4 and a v6 subnet).
func ranges(subnets ...string) [][]map[string]string {
	var r [][]map[string]string
	for _, s := range subnets {
		r = append(r, []map[string]string{{"subnet": s}})
	}
	return r
}

// bridgeConf is the shipped host-local-bridge example on a private
// bridge, subnets and store.
func bridgeConf(t *testing.T, name, bridge, dataDir string, subnets ...string) []byte {
	return example(t, "host-local-bridge", name, map[string]any{"bridge": bridge,
		"ipam": map[string]any{"ranges": ranges(subnets...), "dataDir": dataDir}})
}

// macvlanConf is the shipped macvlan example on master (the one field a
// user must set), with a private range and store.
func macvlanConf(t *testing.T, name, master, subnet, dataDir string) []byte {
	pfx := strings.TrimSuffix(subnet, "0/24")
	return example(t, "macvlan", name, map[string]any{"master": master, "ipam": map[string]any{
		"ranges":  [][]map[string]string{{{"subnet": subnet, "rangeStart": pfx + "100", "rangeEnd": pfx + "199", "gateway": pfx + "1"}}},
		"dataDir": dataDir}})
}
