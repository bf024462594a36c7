package main

import (
	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/netconf"
)

// Conf is hostns's configuration.
type Conf struct {
	// AllowHostNetwork must be true: this network removes all isolation.
	AllowHostNetwork bool
	// Ports are the validated portMappings (runtimeConfig capability).
	Ports []netconf.Port
}

type rawConf struct {
	AllowHostNetwork bool `json:"allowHostNetwork"`
}

// load parses the config. ADD and CHECK refuse bad input; DEL, GC and
// STATUS take what they can, since they must work even after an ADD that
// was refused for that very input.
func load(r *cniplugin.Request[*Conf]) (*Conf, error) {
	var raw rawConf
	derr := netconf.Decode(r.Stdin, &raw)
	ports, perr := netconf.ValidatePorts(r.Base.RuntimeConfig.PortMappings)
	c := &Conf{AllowHostNetwork: raw.AllowHostNetwork, Ports: ports}
	if r.Verb != "ADD" && r.Verb != "CHECK" {
		return c, nil
	}
	if derr != nil {
		return nil, derr
	}
	return c, perr
}

// errNotAllowed refuses a config without the opt-in.
var errNotAllowed = cnierr.New(cnierr.InvalidConfig,
	`"allowHostNetwork" is not true: hostns gives the container the host's own network stack, with no isolation; set "allowHostNetwork": true to allow it`)
