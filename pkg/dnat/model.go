package dnat

import (
	"fmt"
	"log"
	"net/netip"

	"github.com/netdrivers/netdrivers/pkg/netconf"
)

// mapping is one published port for one address family: the unit every
// backend turns into a DNAT rule and an entry into the attachment's chain.
type mapping struct {
	Proto    string     // tcp, udp or sctp
	HostIP   netip.Addr // a specific local address; invalid for every local address of the family
	HostPort uint16
	Cont     netip.Addr // the container's address of the family
	ContPort uint16
}

func (m mapping) is4() bool { return m.Cont.Is4() }

func (m mapping) String() string {
	host := "*"
	if m.HostIP.IsValid() {
		host = m.HostIP.String()
	}
	fam := "ip6"
	if m.is4() {
		fam = "ip"
	}
	return fmt.Sprintf("%s %s %s:%d -> %s", fam, m.Proto, host, m.HostPort,
		netip.AddrPortFrom(m.Cont, m.ContPort))
}

// validMode reports whether m is a known gateway mode ("" means nat).
func validMode(m Mode) bool {
	switch m {
	case "", ModeNAT, ModeNATUnprotected, ModeRouted, ModeIsolated:
		return true
	}
	return false
}

func (n *Network) mode() Mode {
	if n.Mode == "" {
		return ModeNAT
	}
	return n.Mode
}

// masquerades reports whether outbound traffic is source-NATed.
func (n *Network) masquerades() bool {
	m := n.mode()
	return n.Masquerade && (m == ModeNAT || m == ModeNATUnprotected)
}

// hasFamily reports whether the network has a subnet of the family.
func (n *Network) hasFamily(v4 bool) bool {
	for _, p := range n.Subnets {
		if p.Addr().Is4() == v4 {
			return true
		}
	}
	return false
}

// validate checks everything the rules are built from, before any change.
func (n *Network) validate() error {
	if n == nil {
		return fmt.Errorf("%w: no network", ErrInvalid)
	}
	if err := netconf.ValidateNetworkName(n.Name); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := netconf.ValidateIfName(n.Bridge); err != nil {
		return fmt.Errorf("%w: bridge: %w", ErrInvalid, err)
	}
	if !validMode(n.Mode) {
		return fmt.Errorf("%w: gateway mode %q is not one of nat|nat-unprotected|routed|isolated", ErrInvalid, n.Mode)
	}
	for _, p := range n.Subnets {
		if !p.IsValid() || p != p.Masked() || p.Addr().Zone() != "" || p.Addr().Is4In6() {
			return fmt.Errorf("%w: subnet %s is not a network prefix", ErrInvalid, p)
		}
	}
	return nil
}

// mappings validates the attachment against its network and expands its
// ports into one mapping per address family.
func (a *Attachment) mappings(n *Network) ([]mapping, error) {
	if a == nil {
		return nil, fmt.Errorf("%w: no attachment", ErrInvalid)
	}
	if err := validKey(a.Key); err != nil {
		return nil, err
	}
	var c4, c6 netip.Addr
	for _, ip := range a.Addrs {
		ip = ip.Unmap()
		switch {
		case !ip.IsValid() || ip.Zone() != "":
			return nil, fmt.Errorf("%w: container address %s is not usable", ErrInvalid, ip)
		case ip.Is4() && !c4.IsValid():
			c4 = ip
		case ip.Is6() && !c6.IsValid():
			c6 = ip
		}
	}
	if len(a.Ports) > 0 && n.mode() == ModeIsolated {
		return nil, fmt.Errorf("%w: network %q is isolated: it cannot publish ports", ErrInvalid, n.Name)
	}
	var out []mapping
	for _, p := range a.Ports {
		ms, err := expand(p, c4, c6)
		if err != nil {
			return nil, err
		}
		out = append(out, ms...)
	}
	return out, nil
}

// expand turns one port into its per-family mappings. No hostIP means both
// families; 0.0.0.0 and :: mean every address of their family.
func expand(p netconf.Port, c4, c6 netip.Addr) ([]mapping, error) {
	if p.Protocol != "tcp" && p.Protocol != "udp" && p.Protocol != "sctp" {
		return nil, fmt.Errorf("%w: port %s: protocol is not one of tcp|udp|sctp", ErrInvalid, p)
	}
	if p.HostPort == 0 || p.ContainerPort == 0 {
		return nil, fmt.Errorf("%w: port %s: port 0", ErrInvalid, p)
	}
	base := mapping{Proto: p.Protocol, HostPort: p.HostPort, ContPort: p.ContainerPort}
	h := p.HostIP.Unmap()
	if !h.IsValid() {
		var out []mapping
		for _, c := range []netip.Addr{c4, c6} {
			if c.IsValid() {
				m := base
				m.Cont = c
				out = append(out, m)
			}
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("%w: port %s: the container has no address", ErrInvalid, p)
		}
		return out, nil
	}
	if h == netip.IPv6Loopback() {
		return nil, fmt.Errorf("%w: port %s: hostIP ::1 cannot be published (IPv6 has no route_localnet)", ErrInvalid, p)
	}
	if h.Zone() != "" || h.IsMulticast() || h.IsLinkLocalUnicast() {
		return nil, fmt.Errorf("%w: port %s: hostIP is not a usable host address", ErrInvalid, p)
	}
	c := c6
	if h.Is4() {
		c = c4
	}
	if !c.IsValid() {
		// A dual-stack runtime passes the same hostIPs to every network:
		// skipped, as the reference portmap does (plugins#378).
		if !h.IsUnspecified() {
			log.Printf("port %s: skipped: the container has no address of the hostIP's family", p)
		}
		return nil, nil
	}
	base.Cont = c
	if !h.IsUnspecified() {
		base.HostIP = h
	}
	return []mapping{base}, nil
}

func validKey(k netconf.Key) error {
	if err := netconf.ValidateNetworkName(k.Network); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := netconf.ValidateContainerID(k.ContainerID); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := netconf.ValidateIfName(k.IfName); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// udpPorts lists the distinct published UDP host ports, for conntrack.
func udpPorts(ms []mapping) udpFlush {
	var f udpFlush
	for _, m := range ms {
		if m.Proto == "udp" {
			f.add(m.is4(), m.HostPort)
		}
	}
	return f
}

// tag is the human-readable owner written into comments and user data.
func tag(k netconf.Key) string {
	return fmt.Sprintf("netdrivers %s net=%s id=%s if=%s", k.Hash(), k.Network, k.ContainerID, k.IfName)
}

// netTag marks a network's shared rules.
func netTag(n *Network) string {
	return fmt.Sprintf("netdrivers net=%s", n.Name)
}
