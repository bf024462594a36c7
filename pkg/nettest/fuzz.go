package nettest

import (
	"testing"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/netconf"
)

// LoadRequest builds the request a plugin's Load sees, as pkg/cniplugin
// builds it before calling Load: the base config decoded, the network name
// and CNI_ARGS validated (known: the plugin's Args). An input cniplugin
// refuses before Load returns its error instead. For fuzz targets of the
// plugins' config loading.
func LoadRequest[C any](verb string, stdin []byte, cniArgs string, known ...string) (*cniplugin.Request[C], error) {
	base, err := netconf.Load(stdin)
	if err != nil {
		return nil, err
	}
	if err := netconf.ValidateNetworkName(base.Name); err != nil {
		return nil, err
	}
	args, err := netconf.ParseCNIArgs(cniArgs, known...)
	if err != nil {
		return nil, err
	}
	return &cniplugin.Request[C]{
		Verb:  verb,
		Key:   netconf.Key{Network: base.Name, ContainerID: "fuzz", IfName: "eth0"},
		Args:  args,
		Stdin: stdin,
		Base:  base,
	}, nil
}

// FuzzVerbs are the verbs a fuzzed Load runs under: ADD and CHECK refuse
// bad input, DEL, GC and STATUS may be more tolerant.
var FuzzVerbs = []string{"ADD", "CHECK", "DEL", "GC", "STATUS"}

// Coded fails t when err is not nil and carries no CNI code of its own
// (it would reach the runtime as 999).
func Coded(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil && cnierr.CodeOf(err) == cnierr.Internal {
		t.Fatalf("%s: error without a CNI code: %v", what, err)
	}
}
