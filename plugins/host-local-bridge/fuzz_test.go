package main

import (
	"testing"

	"github.com/netdrivers/netdrivers/pkg/dnat"
	"github.com/netdrivers/netdrivers/pkg/jsonlite/jsontest"
	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// FuzzLoad: no config, CNI_ARGS or runtimeConfig makes load panic or fail
// without a CNI code; DEL and GC never refuse the config; what it accepts
// is what add and teardown rely on. Seeds in testdata/fuzz/FuzzLoad;
// scripts/fuzz.sh runs it.
func FuzzLoad(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","type":"host-local-bridge","ipam":{"type":"host-local","subnet":"10.0.0.0/24"}}`), "", uint8(0))
	f.Fuzz(func(t *testing.T, conf []byte, cniArgs string, verb uint8) {
		jsontest.Same(t, conf, func() any { return new(Conf) })
		r, err := nettest.LoadRequest[*Conf](nettest.FuzzVerbs[int(verb)%len(nettest.FuzzVerbs)], conf, cniArgs, "IP", "MAC")
		if err != nil {
			nettest.Coded(t, "request", err)
			return
		}
		c, err := load(r)
		nettest.Coded(t, "load", err)
		if err != nil {
			if r.Verb == "DEL" || r.Verb == "GC" {
				t.Fatalf("%s refused the config: %v", r.Verb, err) // it must clean up after a refused ADD
			}
			return
		}
		if netconf.ValidateIfName(c.Bridge) != nil {
			t.Fatalf("bridge name %q accepted", c.Bridge)
		}
		switch c.mode {
		case dnat.ModeNAT, dnat.ModeNATUnprotected, dnat.ModeRouted, dnat.ModeIsolated:
		case "": // dnat's default (nat): DEL and GC keep going on a config ADD refused
		default:
			t.Fatalf("gatewayMode %q accepted", c.mode)
		}
		if c.FirewallBackend != "nftables" && c.FirewallBackend != "iptables" {
			t.Fatalf("firewallBackend %q accepted", c.FirewallBackend)
		}
		if c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535) {
			t.Fatalf("mtu %d accepted", c.MTU)
		}
		if len(c.ports) > netconf.MaxPortMappings || (len(c.ports) > 0 && (c.mode == dnat.ModeIsolated || c.ipam == nil)) {
			t.Fatalf("%d ports accepted in mode %s (ipam %v)", len(c.ports), c.mode, c.ipam != nil)
		}
		for _, p := range c.ports {
			if p.HostIP.IsValid() && p.HostIP.Is6() && p.HostIP.IsLoopback() {
				t.Fatalf("port on ::1 accepted: %v", p)
			}
		}
		if c.mac != nil && (len(c.mac) != 6 || c.mac[0]&1 == 1) {
			t.Fatalf("mac %v accepted", c.mac)
		}
		c.network()
		_ = c.String()
	})
}
