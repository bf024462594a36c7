package main

import (
	"testing"

	"github.com/netdrivers/netdrivers/pkg/jsonlite/jsontest"
	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// FuzzLoad: no config or runtimeConfig makes load panic or fail without a
// CNI code; DEL, GC and STATUS never fail on the config (they must work
// after an ADD refused for that very input); accepted ports are valid.
func FuzzLoad(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","type":"hostns","allowHostNetwork":true}`), "", uint8(0))
	f.Fuzz(func(t *testing.T, conf []byte, cniArgs string, verb uint8) {
		jsontest.Same(t, conf, func() any { return new(rawConf) })
		r, err := nettest.LoadRequest[*Conf](nettest.FuzzVerbs[int(verb)%len(nettest.FuzzVerbs)], conf, cniArgs)
		if err != nil {
			nettest.Coded(t, "request", err)
			return
		}
		c, err := load(r)
		nettest.Coded(t, "load", err)
		if err != nil {
			if r.Verb != "ADD" && r.Verb != "CHECK" {
				t.Fatalf("%s refused the config: %v", r.Verb, err)
			}
			return
		}
		if r.Verb == "ADD" && len(c.Ports) > netconf.MaxPortMappings {
			t.Fatalf("%d ports accepted", len(c.Ports))
		}
		for _, p := range c.Ports {
			if p.HostPort == 0 || p.ContainerPort == 0 {
				t.Fatalf("port %v accepted", p)
			}
		}
	})
}
