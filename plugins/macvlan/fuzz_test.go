package main

import (
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/netdrivers/netdrivers/pkg/jsonlite/jsontest"
	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// FuzzLoad: no config, CNI_ARGS or runtimeConfig makes load panic or fail
// without a CNI code, and what it accepts is what add relies on. Seeds in
// testdata/fuzz/FuzzLoad; scripts/fuzz.sh runs it.
func FuzzLoad(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","type":"macvlan","master":"eth0","ipam":{"type":"host-local","subnet":"10.0.0.0/24"}}`), "", uint8(0))
	f.Fuzz(func(t *testing.T, conf []byte, cniArgs string, verb uint8) {
		jsontest.Same(t, conf, func() any { return new(Conf) })
		r, err := nettest.LoadRequest[*Conf](nettest.FuzzVerbs[int(verb)%len(nettest.FuzzVerbs)], conf, cniArgs, "MAC", "IP")
		if err != nil {
			nettest.Coded(t, "request", err)
			return
		}
		c, err := load(r)
		nettest.Coded(t, "load", err)
		if r.Verb == "DEL" || r.Verb == "GC" {
			if err != nil {
				t.Fatalf("%s refused the config: %v", r.Verb, err) // it must clean up after a refused ADD
			}
			return // DEL and GC take what they can of an invalid config
		}
		if err != nil {
			return
		}
		if c.Master != "" && validLinkName(c.Master) != nil {
			t.Fatalf("master %q accepted", c.Master)
		}
		if _, ok := modes[c.Mode]; !ok || c.MTU < 0 {
			t.Fatalf("mode %q, mtu %d accepted", c.Mode, c.MTU)
		}
		if c.mac != nil && (len(c.mac) != 6 || c.mac[0]&1 == 1) {
			t.Fatalf("mac %v accepted", c.mac)
		}
		if c.HostShim && (c.mode != netlink.MACVLAN_MODE_BRIDGE || c.LinkInContainer || c.ipam == nil) {
			t.Fatalf("hostShim accepted with mode %q, linkInContainer %v, ipam %v", c.Mode, c.LinkInContainer, c.ipam)
		}
		if len(c.shimIPs) > 2 || (len(c.shimIPs) == 2 && c.shimIPs[0].Is4() == c.shimIPs[1].Is4()) {
			t.Fatalf("shim addresses %v accepted", c.shimIPs)
		}
		for _, a := range c.shimIPs {
			if !a.IsValid() || a.Zone() != "" || a.IsLoopback() || a.IsUnspecified() || a.IsMulticast() {
				t.Fatalf("shim address %v accepted", a)
			}
		}
		modeName(c.mode)
	})
}
