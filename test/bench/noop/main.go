// Command noop is the benchmark's exec floor: a CNI plugin that changes
// nothing and prints a valid result. It is built like ours (static,
// stripped) and, like ours, without skel, so the difference between it
// and a real plugin is the plugin's own work, not process start-up.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

func main() {
	if err := run(os.Getenv("CNI_COMMAND")); err != nil {
		e := types.NewError(types.ErrInternal, err.Error(), "")
		e.Print()
		os.Exit(1)
	}
}

func run(cmd string) error {
	if cmd == "VERSION" {
		return version.All.Encode(os.Stdout)
	}
	stdin, err := io.ReadAll(os.Stdin)
	if err != nil || cmd != "ADD" {
		return err
	}
	return add(stdin)
}

// add passes a chain's result on, or reports one interface with one
// documentation address, as a first plugin would.
func add(stdin []byte) error {
	var conf types.NetConf
	if err := json.Unmarshal(stdin, &conf); err != nil {
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
		Interfaces: []*current.Interface{{Name: os.Getenv("CNI_IFNAME"), Mac: "02:00:5e:00:53:01", Sandbox: os.Getenv("CNI_NETNS")}},
		IPs: []*current.IPConfig{{Interface: current.Int(0),
			Address: net.IPNet{IP: net.IPv4(192, 0, 2, 10), Mask: net.CIDRMask(24, 32)}}},
	}
	return types.PrintResult(res, conf.CNIVersion)
}
