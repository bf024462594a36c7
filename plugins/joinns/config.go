package main

import (
	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/netconf"
)

// TargetAnnotation is the pod annotation naming the target per call
// (delivered through the io.kubernetes.cri.pod-annotations capability).
const TargetAnnotation = "netdrivers.io/target"

// Conf is joinns's configuration with the per-call target applied.
type Conf struct {
	// Target is a namespace path or the container ID of an attachment a
	// netdrivers plugin recorded; From says where it came from.
	Target, From string
	// AllowHostNetwork lets the target be the host's own namespace.
	AllowHostNetwork bool
	// Ports is set when the runtime asked to publish ports.
	Ports []netconf.PortMapping
}

type rawConf struct {
	Target           string `json:"target"`
	AllowHostNetwork bool   `json:"allowHostNetwork"`
}

// load parses the config and picks the target: a per-call one (CNI_ARGS
// TARGET=, or the pod annotation) wins over the config's. ADD and CHECK
// refuse bad input; DEL, GC and STATUS take what they can.
func load(r *cniplugin.Request[*Conf]) (*Conf, error) {
	var raw rawConf
	derr := netconf.Decode(r.Stdin, &raw)
	c := &Conf{Target: raw.Target, From: `"target" in the config`, AllowHostNetwork: raw.AllowHostNetwork,
		Ports: r.Base.RuntimeConfig.PortMappings}
	arg, ann := r.Args["TARGET"], r.Base.RuntimeConfig.PodAnnotations[TargetAnnotation]
	var cerr error
	switch {
	case arg != "" && ann != "" && arg != ann:
		cerr = cnierr.Errorf(cnierr.InvalidConfig, "CNI_ARGS TARGET=%q and the pod annotation %s=%q name different targets", arg, TargetAnnotation, ann)
	case arg != "":
		c.Target, c.From = arg, "CNI_ARGS TARGET"
	case ann != "":
		c.Target, c.From = ann, "the pod annotation "+TargetAnnotation
	}
	if r.Verb != "ADD" && r.Verb != "CHECK" {
		return c, nil
	}
	if derr != nil {
		return nil, derr
	}
	if cerr != nil {
		return nil, cerr
	}
	if c.Target == "" {
		return nil, cnierr.Errorf(cnierr.InvalidConfig, `no target: set "target" in the config (a namespace path or a container ID), or per call CNI_ARGS TARGET= or the pod annotation %s`, TargetAnnotation)
	}
	return c, nil
}
