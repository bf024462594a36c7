package main

import (
	"strings"
	"testing"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/netconf"
)

func request(t *testing.T, verb, stdin, cniArgs string) *cniplugin.Request[*Conf] {
	t.Helper()
	base, err := netconf.Load([]byte(stdin))
	if err != nil {
		t.Fatal(err)
	}
	args, err := netconf.ParseCNIArgs(cniArgs, "TARGET")
	if err != nil {
		t.Fatal(err)
	}
	return &cniplugin.Request[*Conf]{Verb: verb, Stdin: []byte(stdin), Base: base, Args: args}
}

func TestLoadTarget(t *testing.T) {
	ann := func(v string) string {
		return `,"runtimeConfig":{"io.kubernetes.cri.pod-annotations":{"netdrivers.io/target":"` + v + `","x":"y"}}`
	}
	cases := []struct {
		name, conf, args string
		target, from     string
		code             cnierr.Code
	}{
		{"config", `"target":"/run/netns/a"`, "", "/run/netns/a", "config", 0},
		{"CNI_ARGS wins", `"target":"/run/netns/a"`, "IgnoreUnknown=1;TARGET=b", "b", "CNI_ARGS", 0},
		{"annotation wins", `"target":"/run/netns/a"` + ann("c"), "", "c", "annotation", 0},
		{"both agree", `"target":"a"` + ann("c"), "TARGET=c", "c", "CNI_ARGS", 0},
		{"both disagree", `"target":"a"` + ann("c"), "TARGET=d", "", "", cnierr.InvalidConfig},
		{"none", `"allowHostNetwork":true`, "", "", "", cnierr.InvalidConfig},
		{"bad type", `"target":7`, "", "", "", cnierr.InvalidConfig},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stdin := `{"cniVersion":"1.0.0","name":"n","type":"joinns",` + tc.conf + `}`
			c, err := load(request(t, "ADD", stdin, tc.args))
			if tc.code != 0 {
				if cnierr.CodeOf(err) != tc.code {
					t.Fatalf("ADD: err = %v, want code %d", err, tc.code)
				}
			} else if err != nil || c.Target != tc.target || !strings.Contains(c.From, tc.from) {
				t.Fatalf("ADD: %+v, %v; want target %q from %s", c, err, tc.target, tc.from)
			}
			// DEL, GC and STATUS never fail on the config's content.
			for _, verb := range []string{"DEL", "GC", "STATUS"} {
				if _, err := load(request(t, verb, stdin, tc.args)); err != nil {
					t.Errorf("%s: %v", verb, err)
				}
			}
		})
	}
}
