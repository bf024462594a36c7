package netconf

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
)

// MaxPortMappings bounds the portMappings of one attachment.
const MaxPortMappings = 1024

// PortMapping is one entry of the portMappings capability.
type PortMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol,omitempty"`
	HostIP        string `json:"hostIP,omitempty"`
}

// Port is a validated port mapping.
type Port struct {
	HostPort      uint16
	ContainerPort uint16
	Protocol      string     // tcp, udp or sctp
	HostIP        netip.Addr // invalid (zero) means every host address
}

// Wildcard reports whether the mapping applies to every host address.
func (p Port) Wildcard() bool { return !p.HostIP.IsValid() || p.HostIP.IsUnspecified() }

func (p Port) String() string {
	host := "*"
	if !p.Wildcard() {
		host = p.HostIP.String()
	}
	return fmt.Sprintf("%s/%s:%d->%d", p.Protocol, host, p.HostPort, p.ContainerPort)
}

// ValidatePorts checks every mapping and returns them normalised. Protocol
// defaults to tcp; hostIP 0.0.0.0 and :: stay family-specific wildcards.
func ValidatePorts(in []PortMapping) ([]Port, error) {
	if len(in) > MaxPortMappings {
		return nil, cnierr.Errorf(cnierr.InvalidConfig, "portMappings: %d entries, more than the %d accepted", len(in), MaxPortMappings)
	}
	out := make([]Port, 0, len(in))
	for i, m := range in {
		p := Port{Protocol: strings.ToLower(m.Protocol)}
		if p.Protocol == "" {
			p.Protocol = "tcp"
		}
		if p.Protocol != "tcp" && p.Protocol != "udp" && p.Protocol != "sctp" {
			return nil, cnierr.Errorf(cnierr.InvalidConfig, "portMappings[%d].protocol: %q is not one of tcp|udp|sctp", i, m.Protocol)
		}
		if m.HostPort < 1 || m.HostPort > 65535 {
			return nil, cnierr.Errorf(cnierr.InvalidConfig, "portMappings[%d].hostPort: %d is not in 1-65535", i, m.HostPort)
		}
		if m.ContainerPort < 1 || m.ContainerPort > 65535 {
			return nil, cnierr.Errorf(cnierr.InvalidConfig, "portMappings[%d].containerPort: %d is not in 1-65535", i, m.ContainerPort)
		}
		p.HostPort, p.ContainerPort = uint16(m.HostPort), uint16(m.ContainerPort)
		if m.HostIP != "" {
			ip, err := netip.ParseAddr(m.HostIP)
			if err != nil || ip.Zone() != "" {
				return nil, cnierr.Errorf(cnierr.InvalidConfig, "portMappings[%d].hostIP: %q is not an IP address", i, m.HostIP)
			}
			p.HostIP = ip.Unmap()
		}
		for j, q := range out {
			if q.Overlaps(p) {
				return nil, cnierr.Errorf(cnierr.InvalidConfig, "portMappings[%d] (%s) overlaps portMappings[%d] (%s)", i, p, j, q)
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// Overlaps reports whether two mappings claim the same host socket: same
// protocol and port, and host IPs that are equal, or a wildcard of the
// other's family, or the any-address (no hostIP).
func (p Port) Overlaps(q Port) bool {
	if p.HostPort != q.HostPort || p.Protocol != q.Protocol {
		return false
	}
	if !p.HostIP.IsValid() || !q.HostIP.IsValid() {
		return true
	}
	if p.HostIP.Is4() != q.HostIP.Is4() {
		return false
	}
	return p.HostIP.IsUnspecified() || q.HostIP.IsUnspecified() || p.HostIP == q.HostIP
}
