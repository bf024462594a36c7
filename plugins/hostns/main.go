// Command hostns is Docker's "host" network mode as a CNI plugin: the
// container gets the node's own network stack. The runtime's pinned
// namespace file is re-bound onto the plugin's (the host's) namespace;
// published ports become advisory host-wide reservations.
package main

import "github.com/netdrivers/netdrivers/pkg/cniplugin"

func main() {
	cniplugin.Run(cniplugin.Plugin[*Conf]{
		Name:   "hostns",
		Load:   load,
		Add:    add,
		Del:    del,
		Check:  check,
		GC:     gc,
		Status: status,
		// CNI_NETNS is the host's own namespace after ADD, and on every
		// later call: the plugin judges it itself.
		AllowHostNS: true,
	})
}
