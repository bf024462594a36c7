package main

import (
	"testing"

	"github.com/netdrivers/netdrivers/pkg/jsonlite/jsontest"
	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// FuzzLoad: no config, CNI_ARGS or pod annotation makes load panic or fail
// without a CNI code; DEL, GC and STATUS never fail on the config; ADD and
// CHECK only accept a config that names a target.
func FuzzLoad(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","type":"joinns","target":"/run/netns/x"}`), "TARGET=abc", uint8(0))
	f.Fuzz(func(t *testing.T, conf []byte, cniArgs string, verb uint8) {
		jsontest.Same(t, conf, func() any { return new(rawConf) })
		r, err := nettest.LoadRequest[*Conf](nettest.FuzzVerbs[int(verb)%len(nettest.FuzzVerbs)], conf, cniArgs, "TARGET")
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
		if (r.Verb == "ADD" || r.Verb == "CHECK") && (c.Target == "" || c.From == "") {
			t.Fatalf("%s accepted without a target: %+v", r.Verb, c)
		}
	})
}
