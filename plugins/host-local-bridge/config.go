package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/netip"
	"strings"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/dnat"
	"github.com/netdrivers/netdrivers/pkg/ipam"
	"github.com/netdrivers/netdrivers/pkg/netconf"
)

// Conf is the host-local-bridge network config. Unset booleans take
// Docker's defaults (pointers tell unset from false).
type Conf struct {
	netconf.Base
	Bridge          string `json:"bridge"`
	IsGateway       *bool  `json:"isGateway"`
	IsDefaultGW     *bool  `json:"isDefaultGateway"`
	ForceAddress    bool   `json:"forceAddress"`
	IPMasq          *bool  `json:"ipMasq"`
	MTU             int    `json:"mtu"`
	HairpinMode     *bool  `json:"hairpinMode"`
	PromiscMode     bool   `json:"promiscMode"`
	McastSnooping   bool   `json:"multicastSnooping"`
	EnableDAD       bool   `json:"enabledad"`
	GatewayMode     string `json:"gatewayMode"`
	ICC             *bool  `json:"icc"`
	PortIsolation   bool   `json:"portIsolation"` // the reference's name for icc: false
	IsolateNetworks *bool  `json:"isolateNetworks"`
	HostBindingIP   string `json:"hostBindingIP"`
	FirewallBackend string `json:"firewallBackend"`
	IPMasqBackend   string `json:"ipMasqBackend"` // the reference's name, an alias

	// Reference bridge options this plugin does not implement: refused
	// (code 2) rather than silently ignored.
	VLAN        json.RawMessage `json:"vlan"`
	VLANTrunk   json.RawMessage `json:"vlanTrunk"`
	MacSpoofChk json.RawMessage `json:"macspoofchk"`
	NoContIface json.RawMessage `json:"disableContainerInterface"`

	// Resolved by load.
	isGW, isDefaultGW, explicitDefaultGW bool
	masq, hairpin, icc, isolate          bool
	mode                                 dnat.Mode
	ipam                                 *ipam.Config
	ports                                []netconf.Port
	mac                                  net.HardwareAddr
	hostBinding                          netip.Addr
}

// defaultBridge names a network's bridge when the config does not: one
// bridge per network, as Docker's br-<id>.
func defaultBridge(network string) string { return "nd-" + netconf.NetworkHash(network)[:8] }

func load(r *cniplugin.Request[*Conf]) (*Conf, error) {
	if r.Verb == "DEL" || r.Verb == "GC" {
		return loadTolerant(r), nil
	}
	c := &Conf{}
	if err := netconf.Decode(r.Stdin, c); err != nil {
		return nil, err
	}
	for field, v := range map[string]json.RawMessage{"vlan": c.VLAN, "vlanTrunk": c.VLANTrunk,
		"macspoofchk": c.MacSpoofChk, "disableContainerInterface": c.NoContIface} {
		if !asksNothing(v) {
			return nil, cnierr.Errorf(cnierr.UnsupportedField, "%q is not supported by host-local-bridge (got %s)", field, v)
		}
	}
	if err := c.resolveFlags(); err != nil {
		return nil, err
	}
	if err := c.resolveNames(); err != nil {
		return nil, err
	}
	var err error
	if c.ipam, err = ipam.Load(r.Stdin, r.Args); err != nil {
		return nil, err
	}
	if c.ipam == nil {
		// "ipam": {} is an L2-only network: no addresses, so no gateway.
		c.isGW, c.isDefaultGW = false, false
		if len(c.RuntimeConfig.PortMappings) > 0 {
			return nil, cnierr.Errorf(cnierr.InvalidConfig, "portMappings: the network has no \"ipam\", so the container has no address to publish ports on")
		}
	}
	if c.mac, err = c.Base.MAC(r.Args); err != nil {
		return nil, err
	}
	return c, c.resolvePorts()
}

// asksNothing reports whether a field we refuse holds a value that asks
// for nothing: absent, null, false, 0 or [] (the reference takes
// "vlanTrunk": [] as no trunk).
func asksNothing(v json.RawMessage) bool {
	var x any
	if len(v) == 0 || json.Unmarshal(v, &x) != nil {
		return len(v) == 0
	}
	switch x := x.(type) {
	case nil:
		return true
	case bool:
		return !x
	case float64:
		return x == 0
	case []any:
		return len(x) == 0
	}
	return false
}

// loadTolerant is load for DEL and GC, which must clean up also after a
// config that ADD refused or that was edited since: every invalid value is
// logged and replaced by its default. DEL needs little of the config (the
// key names everything; the firewall backend ADD used is in its record).
func loadTolerant(r *cniplugin.Request[*Conf]) *Conf {
	c := &Conf{}
	var errs []error
	if err := netconf.Decode(r.Stdin, c); err != nil {
		errs = append(errs, err)
		c = &Conf{Base: *r.Base}
	}
	errs = append(errs, c.resolveFlags(), c.resolveNames())
	if c.mode == "" { // resolveFlags stopped before it
		c.mode, c.isolate = dnat.ModeNAT, boolOr(c.IsolateNetworks, true)
	}
	if c.FirewallBackend != "nftables" && c.FirewallBackend != "iptables" {
		c.FirewallBackend = "nftables"
	}
	if netconf.ValidateIfName(c.Bridge) != nil {
		c.Bridge = defaultBridge(c.Name)
	}
	if !validMTU(c.MTU) {
		c.MTU = 0
	}
	var err error
	c.ipam, err = ipam.LoadForDel(r.Stdin, r.Args)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		log.Printf("%s with an invalid config, cleaning up anyway: %v", r.Verb, err)
	}
	return c
}

func boolOr(p *bool, def bool) bool {
	if p == nil {
		return def
	}
	return *p
}

func (c *Conf) resolveFlags() error {
	c.isGW = boolOr(c.IsGateway, true)
	c.isDefaultGW = boolOr(c.IsDefaultGW, c.isGW)
	c.explicitDefaultGW = c.IsDefaultGW != nil && *c.IsDefaultGW
	if c.isDefaultGW {
		c.isGW = true // as the reference: a default gateway must be on the bridge
	}
	c.masq = boolOr(c.IPMasq, true)
	c.hairpin = boolOr(c.HairpinMode, !c.PromiscMode)
	if c.hairpin && c.PromiscMode {
		return cnierr.Errorf(cnierr.InvalidConfig, "\"hairpinMode\" and \"promiscMode\" cannot both be true")
	}
	c.icc = boolOr(c.ICC, true) && !c.PortIsolation
	c.isolate = boolOr(c.IsolateNetworks, true)
	switch m := dnat.Mode(strings.ToLower(c.GatewayMode)); m {
	case "", dnat.ModeNAT:
		c.mode = dnat.ModeNAT
	case dnat.ModeNATUnprotected, dnat.ModeRouted, dnat.ModeIsolated:
		c.mode = m
	default:
		return cnierr.Errorf(cnierr.InvalidConfig, "\"gatewayMode\": %q is not one of nat|nat-unprotected|routed|isolated", c.GatewayMode)
	}
	if c.mode == dnat.ModeIsolated {
		// Docker's isolated mode: no gateway on the bridge, no way out.
		c.isGW, c.isDefaultGW, c.masq = false, false, false
	}
	if c.mode == dnat.ModeRouted {
		c.masq = false
	}
	if !validMTU(c.MTU) {
		return cnierr.Errorf(cnierr.InvalidConfig, "\"mtu\": %d is not in 68-65535", c.MTU)
	}
	return nil
}

// validMTU: 0 is "the kernel's default"; 68 is IPv4's minimum.
func validMTU(mtu int) bool { return mtu == 0 || (mtu >= 68 && mtu <= 65535) }

func (c *Conf) resolveNames() error {
	if c.Bridge == "" {
		c.Bridge = defaultBridge(c.Name)
	}
	if err := netconf.ValidateIfName(c.Bridge); err != nil {
		return cnierr.Errorf(cnierr.InvalidConfig, "\"bridge\": %q is not a valid interface name", c.Bridge)
	}
	backend := c.FirewallBackend
	if backend == "" {
		backend = c.IPMasqBackend
	}
	switch backend {
	case "":
		c.FirewallBackend = "nftables"
	case "nftables", "iptables":
		c.FirewallBackend = backend
	default:
		return cnierr.Errorf(cnierr.InvalidConfig, "\"firewallBackend\": %q is not one of nftables|iptables", backend)
	}
	if c.HostBindingIP != "" {
		ip, err := netip.ParseAddr(c.HostBindingIP)
		if err != nil || ip.Zone() != "" {
			return cnierr.Errorf(cnierr.InvalidConfig, "\"hostBindingIP\": %q is not an IP address", c.HostBindingIP)
		}
		c.hostBinding = ip.Unmap()
	}
	return nil
}

// resolvePorts validates portMappings and applies hostBindingIP.
func (c *Conf) resolvePorts() error {
	ports, err := netconf.ValidatePorts(c.RuntimeConfig.PortMappings)
	if err != nil {
		return err
	}
	if len(ports) > 0 && c.mode == dnat.ModeIsolated {
		return cnierr.Errorf(cnierr.InvalidConfig, "portMappings: gatewayMode isolated has no way in from outside, so ports cannot be published")
	}
	for i, p := range ports {
		if !p.HostIP.IsValid() && c.hostBinding.IsValid() {
			ports[i].HostIP = c.hostBinding
			p = ports[i]
		}
		if p.HostIP.IsValid() && p.HostIP.Is6() && p.HostIP.IsLoopback() {
			return cnierr.Errorf(cnierr.InvalidConfig, "portMappings[%d].hostIP: %s: IPv6 has no route_localnet, so ports cannot be published on ::1 (use 127.0.0.1)", i, p.HostIP)
		}
		if p.HostIP.IsValid() && p.HostIP.IsMulticast() {
			return cnierr.Errorf(cnierr.InvalidConfig, "portMappings[%d].hostIP: %s is a multicast address", i, p.HostIP)
		}
	}
	c.ports = ports
	return nil
}

// describe is the network as the firewall backend sees it.
func (c *Conf) network() *dnat.Network {
	n := &dnat.Network{Name: c.Name, Bridge: c.Bridge, Mode: c.mode, Masquerade: c.masq, Isolate: c.isolate}
	if c.ipam != nil {
		n.Subnets = c.ipam.Subnets()
		if c.isGW {
			n.Gateways = c.ipam.Gateways()
		}
	}
	return n
}

func (c *Conf) String() string { return fmt.Sprintf("%s on %s (%s)", c.Name, c.Bridge, c.mode) }
