// Package netconf parses what every plugin's configuration shares: the CNI
// base fields, runtimeConfig capabilities, the args block and CNI_ARGS.
package netconf

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/jsonlite"
)

// MaxConfigSize bounds the stdin a plugin accepts (4 MiB).
const MaxConfigSize = 4 << 20

// Base holds the fields every plugin config has. Plugins embed it.
type Base struct {
	types.PluginConf
	RuntimeConfig RuntimeConfig `json:"runtimeConfig,omitempty"`
	Args          *Args         `json:"args,omitempty"`
	// LogFile, when set, receives a copy of the diagnostics.
	LogFile string `json:"logFile,omitempty"`
	// PrevRaw is the prevResult as given, decoded by Prev on first use:
	// it hides types.NetConf's RawPrevResult (the same key, shallower), so
	// a verb that does not use prevResult (DEL, most CHECKs) skips it.
	PrevRaw json.RawMessage `json:"prevResult,omitempty"`

	prev     *current.Result // Prev's answer, once asked
	prevErr  error
	prevDone bool
}

// Args is the conf-level "args" block (CONVENTIONS.md).
type Args struct {
	CNI *ArgsCNI `json:"cni,omitempty"`
}

// ArgsCNI is args.cni.
type ArgsCNI struct {
	IPs []string `json:"ips,omitempty"`
	MAC string   `json:"mac,omitempty"`
}

// RuntimeConfig carries the capabilities runtimes fill in. Keys are matched
// case-insensitively, as containerd sends CamelCase and Podman camelCase.
type RuntimeConfig struct {
	PortMappings   []PortMapping     `json:"portMappings,omitempty"`
	IPs            []string          `json:"ips,omitempty"`
	MAC            string            `json:"mac,omitempty"`
	DNS            *RuntimeDNS       `json:"dns,omitempty"`
	PodAnnotations map[string]string `json:"io.kubernetes.cri.pod-annotations,omitempty"`
}

// RuntimeDNS is the "dns" capability.
type RuntimeDNS struct {
	Servers  []string `json:"servers,omitempty"`
	Searches []string `json:"searches,omitempty"`
	Options  []string `json:"options,omitempty"`
}

// Decode unmarshals a config, mapping syntax errors to code 6 and
// type errors to code 7 naming the field.
func Decode(data []byte, v any) error {
	if len(data) > MaxConfigSize {
		return cnierr.Errorf(cnierr.DecodeFailure, "config is %d bytes, more than the %d accepted", len(data), MaxConfigSize)
	}
	if err := jsonlite.Unmarshal(data, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return cnierr.Errorf(cnierr.InvalidConfig, "%q: %s is not a valid %s", te.Field, te.Value, te.Type)
		}
		return cnierr.Errorf(cnierr.DecodeFailure, "decode config: %w", err)
	}
	return nil
}

// Load decodes the base fields. prevResult is parsed by Prev, on first use:
// DEL, which needs none, does not pay for (or fail on) it.
func Load(data []byte) (*Base, error) {
	var b Base
	if err := Decode(data, &b); err != nil {
		return nil, err
	}
	return &b, nil
}

// Prev returns the prevResult converted to the current result type, or nil.
func (b *Base) Prev() (*current.Result, error) {
	if !b.prevDone {
		b.prev, b.prevErr = b.parsePrev()
		b.prevDone = true
	}
	return b.prev, b.prevErr
}

func (b *Base) parsePrev() (*current.Result, error) {
	if raw := bytes.TrimSpace(b.PrevRaw); len(raw) > 0 && string(raw) != "null" {
		var m map[string]any
		if err := jsonlite.Unmarshal(raw, &m); err != nil {
			return nil, cnierr.Errorf(cnierr.DecodeFailure, "parse prevResult: %w", err)
		}
		b.RawPrevResult = m
	}
	if b.RawPrevResult != nil {
		if err := version.ParsePrevResult(&b.PluginConf); err != nil {
			return nil, cnierr.Errorf(cnierr.DecodeFailure, "parse prevResult: %w", err)
		}
	}
	if b.PrevResult == nil {
		return nil, nil
	}
	r, err := current.NewResultFromResult(b.PrevResult)
	if err != nil {
		return nil, cnierr.Errorf(cnierr.DecodeFailure, "convert prevResult: %w", err)
	}
	return r, nil
}

// MAC picks the requested container MAC with the reference precedence:
// CNI_ARGS MAC < args.cni.mac < runtimeConfig.mac. Empty means none asked.
func (b *Base) MAC(cniArgs CNIArgs) (net.HardwareAddr, error) {
	s := cniArgs["MAC"]
	if b.Args != nil && b.Args.CNI != nil && b.Args.CNI.MAC != "" {
		s = b.Args.CNI.MAC
	}
	if b.RuntimeConfig.MAC != "" {
		s = b.RuntimeConfig.MAC
	}
	if s == "" {
		return nil, nil
	}
	return ParseMAC(s)
}

// ParseMAC accepts a unicast Ethernet address.
func ParseMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil || len(mac) != 6 {
		return nil, cnierr.Errorf(cnierr.InvalidConfig, "mac %q is not a 6-byte Ethernet address", s)
	}
	if mac[0]&1 == 1 {
		return nil, cnierr.Errorf(cnierr.InvalidConfig, "mac %q is a multicast address", s)
	}
	if bytes.Equal(mac, make(net.HardwareAddr, 6)) {
		return nil, cnierr.Errorf(cnierr.InvalidConfig, "mac %q is the zero address", s)
	}
	return mac, nil
}

// CNIArgs is the parsed CNI_ARGS variable.
type CNIArgs map[string]string

// CommonArgs are the CNI_ARGS keys runtimes send to every plugin.
var CommonArgs = []string{"K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID"}

// ParseCNIArgs parses "K=V;K2=V2". Keys outside known (and CommonArgs)
// are refused unless IgnoreUnknown is 1 or true.
func ParseCNIArgs(s string, known ...string) (CNIArgs, error) {
	args := CNIArgs{}
	if s == "" {
		return args, nil
	}
	ignore := false
	var unknown []string
	for _, pair := range strings.Split(s, ";") {
		if pair == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		if !ok || k == "" {
			return nil, cnierr.Errorf(cnierr.InvalidEnv, "CNI_ARGS: %q is not KEY=VALUE", pair)
		}
		if k == "IgnoreUnknown" {
			switch strings.ToLower(v) {
			case "1", "true":
				ignore = true
			case "0", "false":
			default:
				return nil, cnierr.Errorf(cnierr.InvalidEnv, "CNI_ARGS: IgnoreUnknown=%q is not 1, true, 0 or false", v)
			}
			continue
		}
		args[k] = v
	}
	for k := range args {
		if !contains(known, k) && !contains(CommonArgs, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 && !ignore {
		return nil, cnierr.Errorf(cnierr.InvalidEnv, "CNI_ARGS: unknown keys %s (set IgnoreUnknown=1 to ignore them)", strings.Join(unknown, ","))
	}
	return args, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
