// Command joinns is Docker's "--network container:X" as a CNI plugin: the
// container joins the network stack of another, already attached one. The
// runtime's pinned namespace file is re-bound onto the target's namespace.
package main

import "github.com/netdrivers/netdrivers/pkg/cniplugin"

func main() {
	cniplugin.Run(cniplugin.Plugin[*Conf]{
		Name:   "joinns",
		Load:   load,
		Add:    add,
		Del:    del,
		Check:  check,
		GC:     gc,
		Status: status,
		Args:   []string{"TARGET"},
		// After ADD CNI_NETNS is the target's namespace, which may be the
		// host's (allowHostNetwork): the plugin judges CNI_NETNS itself.
		AllowHostNS: true,
	})
}
