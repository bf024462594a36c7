// Command none is Docker's "none" network: the container gets loopback
// only. Installed as "loopback" it stands in for the reference loopback.
package main

import (
	"os"
	"path/filepath"

	"github.com/netdrivers/netdrivers/pkg/cniplugin"
)

func main() {
	name := filepath.Base(os.Args[0])
	if name != "loopback" {
		name = "none"
	}
	cniplugin.Run(cniplugin.Plugin[mode]{
		Name:   name,
		Load:   func(*cniplugin.Request[mode]) (mode, error) { return mode(name), nil },
		Add:    add,
		Del:    del,
		Check:  check,
		GC:     nil, // nothing outside the namespace to collect
		Status: nil, // no node-wide dependency
		// containerd runs its loopback network on the pod's path, also when
		// hostns has re-bound that path onto the node: loopback must then
		// succeed and leave the node's lo alone.
		AllowHostNS: name == "loopback",
	})
}
