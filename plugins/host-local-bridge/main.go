// Command host-local-bridge is Docker's bridge driver as one CNI plugin:
// veth into a Linux bridge, an address from the built-in host-local
// allocator, masquerade, published ports and isolation, in one exec.
package main

import "github.com/netdrivers/netdrivers/pkg/cniplugin"

func main() {
	cniplugin.Run(cniplugin.Plugin[*Conf]{
		Name: "host-local-bridge", Load: load,
		Add: add, Del: del, Check: check, GC: gc, Status: status,
		Args: []string{"IP", "MAC"},
	})
}
