// Command noop is the benchmark's exec floor: a CNI plugin that changes
// nothing and prints a valid result. It is built like ours (static,
// stripped, skel for argument handling), so the difference between it and
// a real plugin is the plugin's own work, not process start-up.
package main

import (
	"encoding/json"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: add, Del: nop, Check: nop, GC: nop, Status: nop},
		version.All, "noop: the netdrivers benchmark's exec floor")
}

func nop(*skel.CmdArgs) error { return nil }

// add passes a chain's result on, or reports one interface with one
// documentation address, as a first plugin would.
func add(args *skel.CmdArgs) error {
	var conf types.NetConf
	if err := json.Unmarshal(args.StdinData, &conf); err != nil {
		return fmt.Errorf("decode config: %w", err)
	}
	if len(conf.RawPrevResult) > 0 {
		if err := version.ParsePrevResult(&conf); err != nil {
			return fmt.Errorf("parse prevResult: %w", err)
		}
		return types.PrintResult(conf.PrevResult, conf.CNIVersion)
	}
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: args.IfName, Mac: "02:00:5e:00:53:01", Sandbox: args.Netns}},
		IPs: []*current.IPConfig{{Interface: current.Int(0),
			Address: net.IPNet{IP: net.IPv4(192, 0, 2, 10), Mask: net.CIDRMask(24, 32)}}},
	}
	return types.PrintResult(res, conf.CNIVersion)
}
