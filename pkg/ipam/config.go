package ipam

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/jsonlite"
	"github.com/netdrivers/netdrivers/pkg/netconf"
)

// BuiltinType is the ipam type served in-process.
const BuiltinType = "host-local"

// DefaultDataDir is the reference host-local's store root.
const DefaultDataDir = "/var/lib/cni/networks"

// CNIArgs are the CNI_ARGS keys Load reads; plugins list them in
// cniplugin.Plugin.Args.
var CNIArgs = []string{"IP"}

// Config is the "ipam" section of a network config.
type Config struct {
	Type       string         // "host-local" is served in-process; anything else is exec'd (delegated)
	Ranges     []RangeSet     // host-local: runtimeConfig.ipRanges, legacy subnet, then ranges
	Routes     []*types.Route // host-local "routes"
	DataDir    string         // default /var/lib/cni/networks
	ResolvConf string
	Requested  []netip.Addr // static IPs: CNI_ARGS IP=, args.cni.ips, runtimeConfig.ips (merged)

	network    string
	cniVersion string
	stdin      []byte // the whole netconf, for delegation
	// reclaimBefore overrides the boot-start bound of reclaiming (tests).
	reclaimBefore func() time.Time
}

// ipamJSON is the "ipam" object. The embedded legacy range makes
// subnet/rangeStart/rangeEnd/gateway top-level keys, as in the reference.
type ipamJSON struct {
	rangeJSON
	Type       string            `json:"type"`
	Routes     []json.RawMessage `json:"routes"`
	DataDir    string            `json:"dataDir"`
	ResolvConf string            `json:"resolvConf"`
	Ranges     [][]rangeJSON     `json:"ranges"`
}

type netJSON struct {
	Name          string          `json:"name"`
	CNIVersion    string          `json:"cniVersion"`
	IPAM          json.RawMessage `json:"ipam"`
	RuntimeConfig struct {
		IPRanges [][]rangeJSON `json:"ipRanges,omitempty"`
		IPs      []string      `json:"ips,omitempty"`
	} `json:"runtimeConfig"`
	Args *struct {
		CNI *struct {
			IPs []string `json:"ips"`
		} `json:"cni"`
	} `json:"args"`
}

// Load parses the "ipam" object of the netconf the plugin received on stdin, with the
// request's CNI_ARGS. No "ipam" key or "ipam": {} returns (nil, nil): L2 only, no IPAM.
// Every invalid value is a code-7 error naming field, value and expectation.
func Load(stdin []byte, args netconf.CNIArgs) (*Config, error) {
	var n netJSON
	if err := netconf.Decode(stdin, &n); err != nil {
		return nil, err
	}
	raw := bytes.TrimSpace(n.IPAM)
	if len(raw) == 0 || string(raw) == "null" || isEmptyObject(raw) {
		return nil, nil
	}
	var ij ipamJSON
	if err := netconf.Decode(raw, &ij); err != nil {
		return nil, prefixField("ipam", err)
	}
	c := &Config{Type: ij.Type, network: n.Name, cniVersion: n.CNIVersion, stdin: stdin}
	switch {
	case ij.Type == "":
		return nil, cnierr.Errorf(cnierr.InvalidConfig, `"ipam.type": missing, expected "host-local" or the name of an IPAM plugin`)
	case strings.ContainsAny(ij.Type, `/\`) || ij.Type == "." || ij.Type == "..":
		return nil, cnierr.Errorf(cnierr.InvalidConfig, `"ipam.type": %q is not a plugin name`, ij.Type)
	case ij.Type != BuiltinType:
		return c, nil
	}
	if err := netconf.ValidateNetworkName(n.Name); err != nil {
		return nil, err
	}
	if err := c.loadBuiltin(&n, &ij, args); err != nil {
		return nil, err
	}
	return c, nil
}

// LoadForDel is Load for DEL and GC, which must succeed also for a config
// that ADD refused (or that was edited since). When Load fails, it still
// returns, with Load's error for the log, a Config that can release what
// an attachment holds: the built-in store needs only "dataDir" and the
// network name, a delegated type only its name (the delegate judges its
// own config). It returns nil (and the error) when nothing can have been
// allocated: no usable type, or a stdin that does not decode.
func LoadForDel(stdin []byte, args netconf.CNIArgs) (*Config, error) {
	c, err := Load(stdin, args)
	if err == nil {
		return c, nil
	}
	var n netJSON
	if jsonlite.Unmarshal(stdin, &n) != nil {
		return nil, err
	}
	var ij struct {
		Type    string `json:"type"`
		DataDir string `json:"dataDir"`
	}
	if jsonlite.Unmarshal(n.IPAM, &ij) != nil || ij.Type == "" || strings.ContainsAny(ij.Type, `/\`) {
		return nil, err
	}
	c = &Config{Type: ij.Type, DataDir: orDefault(ij.DataDir, DefaultDataDir), network: n.Name, cniVersion: n.CNIVersion, stdin: stdin}
	if c.Builtin() && netconf.ValidateNetworkName(n.Name) != nil {
		return nil, err
	}
	return c, err
}

func (c *Config) loadBuiltin(n *netJSON, ij *ipamJSON, args netconf.CNIArgs) error {
	c.DataDir, c.ResolvConf = ij.DataDir, ij.ResolvConf
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	var err error
	if c.Routes, err = parseRoutes(ij.Routes); err != nil {
		return err
	}
	if c.Requested, err = requestedIPs(n, args); err != nil {
		return err
	}
	type source struct {
		field string
		set   []rangeJSON
	}
	var sets []source
	for i, s := range n.RuntimeConfig.IPRanges {
		sets = append(sets, source{fmt.Sprintf("runtimeConfig.ipRanges[%d]", i), s})
	}
	if ij.Subnet != "" { // the legacy single range, only when it names a subnet
		sets = append(sets, source{"ipam", []rangeJSON{ij.rangeJSON}})
	}
	for i, s := range ij.Ranges {
		sets = append(sets, source{fmt.Sprintf("ipam.ranges[%d]", i), s})
	}
	if len(sets) == 0 {
		return cnierr.Errorf(cnierr.InvalidConfig, `"ipam": no IP ranges, expected "ranges" or "subnet"`)
	}
	v4, v6 := 0, 0
	for _, s := range sets {
		set, err := canonicalizeSet(s.field, s.set)
		if err != nil {
			return err
		}
		for j, prev := range c.Ranges {
			if prev.overlaps(set) {
				return cnierr.Errorf(cnierr.InvalidConfig, "%s overlaps %s (%s and %s)", s.field, sets[j].field, set, prev)
			}
		}
		if set[0].Start.Is4() {
			v4++
		} else {
			v6++
		}
		c.Ranges = append(c.Ranges, set)
	}
	if v4 > 1 || v6 > 1 {
		if ok, _ := version.GreaterThanOrEqualTo(orDefault(n.CNIVersion, "0.1.0"), "0.3.0"); !ok {
			return cnierr.Errorf(cnierr.InvalidConfig, "cniVersion %q allows one address per family, the ranges ask for %d IPv4 and %d IPv6", n.CNIVersion, v4, v6)
		}
	}
	return nil
}

// requestedIPs merges CNI_ARGS IP=, args.cni.ips and runtimeConfig.ips in
// the reference's order, without duplicates. "ip/prefix" is accepted as ip.
func requestedIPs(n *netJSON, args netconf.CNIArgs) ([]netip.Addr, error) {
	type src struct {
		field string
		vals  []string
	}
	var srcs []src
	if v, ok := args["IP"]; ok && v != "" {
		srcs = append(srcs, src{"CNI_ARGS IP", []string{v}})
	}
	if n.Args != nil && n.Args.CNI != nil {
		srcs = append(srcs, src{"args.cni.ips", n.Args.CNI.IPs})
	}
	srcs = append(srcs, src{"runtimeConfig.ips", n.RuntimeConfig.IPs})
	var out []netip.Addr
	for _, s := range srcs {
		for i, v := range s.vals {
			ip, err := parseRequested(v)
			if err != nil {
				return nil, cnierr.Errorf(cnierr.InvalidConfig, "%s[%d]: %q is not an IP address (or IP/prefix)", s.field, i, v)
			}
			if !slices.Contains(out, ip) {
				out = append(out, ip)
			}
		}
	}
	return out, nil
}

func parseRequested(s string) (netip.Addr, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Addr{}, err
		}
		return p.Addr().Unmap(), nil
	}
	return parseAddr(s)
}

func parseRoutes(raw []json.RawMessage) ([]*types.Route, error) {
	var out []*types.Route
	for i, r := range raw {
		var rt types.Route
		if string(bytes.TrimSpace(r)) == "null" {
			return nil, cnierr.Errorf(cnierr.InvalidConfig, "ipam.routes[%d]: null, expected {\"dst\": CIDR, \"gw\": IP}", i)
		}
		if err := json.Unmarshal(r, &rt); err != nil {
			return nil, cnierr.Errorf(cnierr.InvalidConfig, "ipam.routes[%d]: %s is not a route, expected {\"dst\": CIDR, \"gw\": IP}: %w", i, clip(r), err)
		}
		if rt.Dst.IP == nil {
			return nil, cnierr.Errorf(cnierr.InvalidConfig, "ipam.routes[%d]: missing \"dst\", expected a CIDR", i)
		}
		out = append(out, &rt)
	}
	return out, nil
}

// prefixField adds "ipam." to the field a decode error names.
func prefixField(prefix string, err error) error {
	var ce *cnierr.Error
	if errors.As(err, &ce) && ce.Err != nil {
		return &cnierr.Error{Code: ce.Code, Msg: prefix, Err: ce.Err}
	}
	return err
}

func isEmptyObject(raw []byte) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(raw, &m) == nil && len(m) == 0
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func clip(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "..."
	}
	return string(b)
}
