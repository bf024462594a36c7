package main

import (
	"testing"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/netconf"
)

func TestLoad(t *testing.T) {
	cases := []struct {
		name, conf string
		allow      bool
		ports      int
		code       cnierr.Code
	}{
		{"opt-in", `"allowHostNetwork":true`, true, 0, 0},
		{"no opt-in", ``, false, 0, 0}, // refused by ADD itself, with its own message
		{"ports", `"allowHostNetwork":true,"runtimeConfig":{"portMappings":[{"HostPort":80,"ContainerPort":80,"Protocol":"tcp","HostIP":""},{"hostPort":53,"containerPort":53,"protocol":"udp"}]}`, true, 2, 0},
		{"bad port", `"allowHostNetwork":true,"runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":80}]}`, false, 0, cnierr.InvalidConfig},
		{"not a bool", `"allowHostNetwork":"yes"`, false, 0, cnierr.InvalidConfig},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stdin := `{"cniVersion":"1.0.0","name":"n","type":"hostns"`
			if tc.conf != "" {
				stdin += "," + tc.conf
			}
			stdin += "}"
			base, err := netconf.Load([]byte(stdin))
			if err != nil {
				t.Fatal(err)
			}
			r := &cniplugin.Request[*Conf]{Verb: "ADD", Stdin: []byte(stdin), Base: base}
			c, err := load(r)
			if tc.code != 0 {
				if cnierr.CodeOf(err) != tc.code {
					t.Fatalf("err = %v, want code %d", err, tc.code)
				}
			} else if err != nil || c.AllowHostNetwork != tc.allow || len(c.Ports) != tc.ports {
				t.Fatalf("load = %+v, %v; want allow=%v and %d ports", c, err, tc.allow, tc.ports)
			}
			r.Verb = "DEL"
			if _, err := load(r); err != nil {
				t.Errorf("DEL must not fail on the config: %v", err)
			}
		})
	}
}
