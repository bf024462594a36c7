//go:build runtimes

package runtimes

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// plugin is one entry of a conflist.
type plugin map[string]any

// conflist renders a network list in the form the suite ships:
// cniVersion 1.0.0 (what Podman 4.3's and containerd 1.6's libcni read)
// with cniVersions offering 1.1.0 to newer runtimes.
func conflist(name string, plugins ...plugin) []byte {
	b, err := json.MarshalIndent(map[string]any{
		"cniVersion": "1.0.0", "cniVersions": []string{"1.0.0", "1.1.0"},
		"name": name, "plugins": plugins,
	}, "", "  ")
	if err != nil {
		panic(err)
	}
	return b
}

// writeConf writes a conflist into dir as <name>.conflist.
func writeConf(t *testing.T, dir, name string, body []byte) string {
	t.Helper()
	p := filepath.Join(dir, name+".conflist")
	if err := os.WriteFile(p, body, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// hostLocal is the built-in host-local IPAM on subnet, its store in the
// work dir (never /var/lib/cni/networks).
func hostLocal(subnet, dataDir string) map[string]any {
	return map[string]any{"type": "host-local", "ranges": [][]map[string]string{{{"subnet": subnet}}}, "dataDir": dataDir}
}

// bridgeNet is a host-local-bridge network publishing ports.
func bridgeNet(bridge, subnet, dataDir string) plugin {
	return plugin{"type": "host-local-bridge", "bridge": bridge, "capabilities": map[string]bool{"portMappings": true},
		"ipam": hostLocal(subnet, dataDir)}
}

// macvlanNet is a macvlan network on master.
func macvlanNet(master, subnet, dataDir string) plugin {
	return plugin{"type": "macvlan", "master": master, "mode": "bridge", "ipam": hostLocal(subnet, dataDir)}
}

// hostnsNet is Docker's host mode; it has to be asked for.
func hostnsNet() plugin {
	return plugin{"type": "hostns", "allowHostNetwork": true, "capabilities": map[string]bool{"portMappings": true}}
}

// joinnsNet is Docker's container:X mode; the target comes per call
// (CNI_ARGS TARGET=, or the pod annotation through the capability).
func joinnsNet() plugin {
	return plugin{"type": "joinns", "capabilities": map[string]bool{"io.kubernetes.cri.pod-annotations": true}}
}

// noneNet is Docker's none.
func noneNet() plugin { return plugin{"type": "none"} }
