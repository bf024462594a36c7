// Command macvlan gives a container its own MAC address on a parent link,
// so that it appears as a host of its own on that segment (Docker's
// macvlan driver). A drop-in for the reference macvlan plugin, plus an
// optional host shim through which the host reaches its containers.
package main

import "github.com/netdrivers/netdrivers/pkg/cniplugin"

func main() {
	cniplugin.Run(cniplugin.Plugin[*Conf]{
		Name:   "macvlan",
		Load:   load,
		Add:    add,
		Del:    del,
		Check:  check,
		GC:     gc,
		Status: status,
		Args:   []string{"MAC", "IP"}, // MAC: the reference's; IP: host-local's
	})
}
