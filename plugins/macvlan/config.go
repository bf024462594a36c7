package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/netip"
	"reflect"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/ipam"
	"github.com/netdrivers/netdrivers/pkg/jsonlite"
	"github.com/netdrivers/netdrivers/pkg/netconf"
)

// Conf is a macvlan network config: the reference plugin's fields with
// its spellings, plus the host shim.
type Conf struct {
	Master          string   `json:"master"`
	Mode            string   `json:"mode"`
	MTU             int      `json:"mtu"`
	MAC             string   `json:"mac,omitempty"`
	LinkInContainer bool     `json:"linkInContainer,omitempty"`
	BCQueueLen      uint32   `json:"bcqueuelen,omitempty"`
	HostShim        bool     `json:"hostShim,omitempty"`
	HostShimIP      addrList `json:"hostShimIP,omitempty"`
	EnableDAD       bool     `json:"enabledad,omitempty"`

	mode    netlink.MacvlanMode
	mac     net.HardwareAddr // nil: the kernel picks one
	shimIPs []netip.Addr     // at most one per family
	ipam    *ipam.Config     // nil: L2 only
	base    *netconf.Base
}

// addrList is "hostShimIP": one address (or CIDR) or a list of them.
type addrList []string

func (a *addrList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = addrList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		// netconf.Decode turns this into code 7 naming the field.
		return &json.UnmarshalTypeError{Value: string(b), Type: reflect.TypeOf(""), Field: "hostShimIP"}
	}
	*a = many
	return nil
}

// minMTU is the smallest MTU the kernel gives an Ethernet link (ETH_MIN_MTU).
const minMTU = 68

var modes = map[string]netlink.MacvlanMode{
	"":         netlink.MACVLAN_MODE_BRIDGE, // the reference's default
	"bridge":   netlink.MACVLAN_MODE_BRIDGE,
	"private":  netlink.MACVLAN_MODE_PRIVATE,
	"vepa":     netlink.MACVLAN_MODE_VEPA,
	"passthru": netlink.MACVLAN_MODE_PASSTHRU,
}

func modeName(m netlink.MacvlanMode) string {
	for name, v := range modes {
		if v == m && name != "" {
			return name
		}
	}
	return fmt.Sprintf("mode %d", m)
}

// load parses and validates the config without touching the kernel; the
// master and its MTU are checked in ADD, against the live link.
func load(r *cniplugin.Request[*Conf]) (*Conf, error) {
	if r.Verb == "DEL" || r.Verb == "GC" {
		return loadTolerant(r), nil
	}
	c := &Conf{base: r.Base}
	if err := netconf.Decode(r.Stdin, c); err != nil {
		return nil, err
	}
	if err := c.validate(r.Args); err != nil {
		return nil, err
	}
	var err error
	if untypedIPAM(r.Stdin) {
		// The reference takes an "ipam" without "type" for L2 only.
		log.Printf(`"ipam" has no "type": attaching at L2 only, without addresses, as the reference macvlan does`)
	} else if c.ipam, err = ipam.Load(r.Stdin, r.Args); err != nil {
		return nil, err
	}
	if err := c.validateShim(); err != nil {
		return nil, err
	}
	return c, nil
}

// loadTolerant is load for DEL and GC, which must clean up also after a
// config that ADD refused or that was edited since: invalid values are
// logged and left at their defaults (DEL finds its work from the key, the
// records and the store).
func loadTolerant(r *cniplugin.Request[*Conf]) *Conf {
	c := &Conf{base: r.Base}
	var errs []error
	if err := netconf.Decode(r.Stdin, c); err != nil {
		errs = append(errs, err)
		c = &Conf{base: r.Base}
	}
	errs = append(errs, c.validate(r.Args))
	if !untypedIPAM(r.Stdin) {
		var err error
		c.ipam, err = ipam.LoadForDel(r.Stdin, r.Args)
		errs = append(errs, err)
	}
	errs = append(errs, c.validateShim())
	if err := errors.Join(errs...); err != nil {
		log.Printf("%s with an invalid config, cleaning up anyway: %v", r.Verb, err)
	}
	return c
}

func (c *Conf) validate(args netconf.CNIArgs) error {
	mode, ok := modes[c.Mode]
	if !ok {
		return cnierr.Errorf(cnierr.InvalidConfig, `"mode": %q is not one of bridge|private|vepa|passthru`, c.Mode)
	}
	c.mode = mode
	if c.Master != "" {
		if err := validLinkName(c.Master); err != nil {
			return cnierr.Errorf(cnierr.InvalidConfig, `"master": %w`, err)
		}
	}
	if c.MTU < 0 || (c.MTU > 0 && c.MTU < minMTU) {
		// The kernel's EINVAL would read as a parent problem (code 102).
		return cnierr.Errorf(cnierr.InvalidConfig, `"mtu": %d is out of range; want 0 (the master's MTU) or %d up to the master's MTU`, c.MTU, minMTU)
	}
	return c.pickMAC(args)
}

// pickMAC applies the precedence, lowest first: the config's "mac",
// CNI_ARGS MAC=, args.cni.mac, runtimeConfig.mac. The reference macvlan
// ignores args.cni.mac; the reference bridge honours it, and so do we.
func (c *Conf) pickMAC(args netconf.CNIArgs) error {
	mac, err := c.base.MAC(args)
	if err != nil {
		return err
	}
	if mac == nil && c.MAC != "" {
		if mac, err = netconf.ParseMAC(c.MAC); err != nil {
			return err
		}
	}
	if c.mode == netlink.MACVLAN_MODE_PASSTHRU {
		// passthru takes the master's address and the kernel ignores a
		// requested one; the reference accepts the config all the same.
		mac = nil
	}
	c.mac = mac
	return nil
}

// validateShim checks the hostShim options against mode and IPAM.
func (c *Conf) validateShim() error {
	if !c.HostShim {
		if len(c.HostShimIP) > 0 {
			return cnierr.Errorf(cnierr.InvalidConfig, `"hostShimIP" is set but "hostShim" is not true`)
		}
		return nil
	}
	switch {
	case c.mode != netlink.MACVLAN_MODE_BRIDGE:
		return cnierr.Errorf(cnierr.InvalidConfig, `"hostShim": needs "mode": "bridge" (the shim reaches containers through the parent's bridge), not %q`, c.Mode)
	case c.LinkInContainer:
		return cnierr.Errorf(cnierr.InvalidConfig, `"hostShim" cannot be combined with "linkInContainer": the master is not in the host namespace`)
	case c.ipam == nil:
		return cnierr.Errorf(cnierr.InvalidConfig, `"hostShim": needs container addresses from "ipam" to route to; "ipam" is empty`)
	}
	for _, s := range c.HostShimIP {
		a, err := parseAddr(s)
		if err != nil {
			return err
		}
		for _, b := range c.shimIPs {
			if a.Is4() == b.Is4() {
				return cnierr.Errorf(cnierr.InvalidConfig, `"hostShimIP": %s and %s are of the same family; give at most one IPv4 and one IPv6 address`, b, a)
			}
		}
		if r := c.poolRange(a); r != nil {
			return cnierr.Errorf(cnierr.InvalidConfig, `"hostShimIP": %s lies in the pool %s, which would hand it to a container too; pick one outside it, or leave "hostShimIP" out to take one from the pool`, a, r)
		}
		c.shimIPs = append(c.shimIPs, a)
	}
	if len(c.shimIPs) == 0 && !c.ipam.Builtin() {
		return cnierr.Errorf(cnierr.InvalidConfig, `"hostShim": with "ipam" type %q set "hostShimIP" (the shim takes an address from the pool only with the built-in host-local)`, c.ipam.Type)
	}
	return nil
}

// poolRange is the built-in pool's range holding a, or nil.
func (c *Conf) poolRange(a netip.Addr) *ipam.Range {
	if !c.ipam.Builtin() {
		return nil
	}
	for _, set := range c.ipam.Ranges {
		if r := set.RangeFor(a); r != nil {
			return r
		}
	}
	return nil
}

func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		p, perr := netip.ParsePrefix(s)
		if perr != nil {
			return netip.Addr{}, cnierr.Errorf(cnierr.InvalidConfig, `"hostShimIP": %q is not an IP address`, s)
		}
		a = p.Addr()
	}
	a = a.Unmap()
	if a.Zone() != "" || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() {
		return netip.Addr{}, cnierr.Errorf(cnierr.InvalidConfig, `"hostShimIP": %q is not a unicast global address`, s)
	}
	return a, nil
}

// untypedIPAM reports an "ipam" object with keys but no "type". The type
// is decoded into a field, as ipam.Load and encoding/json do, so that
// "Type" counts too.
func untypedIPAM(stdin []byte) bool {
	var n struct {
		IPAM json.RawMessage `json:"ipam"`
	}
	var keys map[string]json.RawMessage
	if jsonlite.Unmarshal(stdin, &n) != nil || jsonlite.Unmarshal(n.IPAM, &keys) != nil || len(keys) == 0 {
		return false // absent, {} or malformed: ipam.Load decides
	}
	var typed struct {
		Type string `json:"type"`
	}
	if jsonlite.Unmarshal(n.IPAM, &typed) != nil {
		return false // a "type" that is not a string: ipam.Load names it
	}
	return typed.Type == ""
}

// validLinkName accepts what the kernel accepts as an interface name.
func validLinkName(name string) error {
	if name == "" || len(name) > 15 || name == "." || name == ".." ||
		strings.ContainsAny(name, "/: \t\n") {
		return fmt.Errorf("%q is not a valid interface name (1-15 bytes, no '/', ':' or whitespace)", name)
	}
	for _, r := range name {
		if r < ' ' || r == 0x7f {
			return fmt.Errorf("%q is not a valid interface name (control character)", name)
		}
	}
	return nil
}
