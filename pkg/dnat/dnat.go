// Package dnat programs the packet filter for host-local-bridge networks:
// outbound masquerade, published ports (DNAT), filtering of unpublished
// ports, isolation between networks and the 127.0.0.0/8 guard. Two
// backends keep the same semantics: nftables over netlink (default) and
// iptables through the iptables binaries (for iptables-legacy hosts).
package dnat

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/state"
)

// Mode is Docker's gateway mode of a network.
type Mode string

const (
	// ModeNAT masquerades outbound traffic and, from outside the bridge,
	// lets only published ports (and replies) reach containers.
	ModeNAT Mode = "nat"
	// ModeNATUnprotected masquerades but does not filter inbound traffic.
	ModeNATUnprotected Mode = "nat-unprotected"
	// ModeRouted neither masquerades nor filters: container addresses are
	// routed as they are.
	ModeRouted Mode = "routed"
	// ModeIsolated lets nothing in or out of the bridge.
	ModeIsolated Mode = "isolated"
)

// Network is one CNI network's share of the rules; identical for all its
// attachments.
type Network struct {
	Name       string         // CNI network name
	Bridge     string         // host bridge device
	Subnets    []netip.Prefix // every IPAM subnet, v4 and v6
	Gateways   []netip.Addr   // the bridge's addresses (gateways)
	Mode       Mode
	Masquerade bool // ipMasq
	Isolate    bool // drop traffic between this network's bridge and other netdrivers bridges
}

// Attachment is one container's share.
type Attachment struct {
	Key   netconf.Key    // network, container ID, ifname: every object name derives from Key.Hash()
	Addrs []netip.Addr   // the container's addresses on this network
	Ports []netconf.Port // validated published ports (hostIP default already applied)
}

// Backend programs one host's packet filter.
type Backend interface {
	// Add installs the network's shared rules when missing (idempotent,
	// race-free with parallel ADDs of the same and of other networks) and
	// the attachment's rules, all-or-nothing.
	Add(ctx context.Context, n *Network, a *Attachment) error
	// Del removes the attachment's rules knowing only its key. Gone is
	// success; it continues past errors and joins them.
	Del(ctx context.Context, n *Network, key netconf.Key) error
	// Check verifies the attachment's rules are as Add made them and names
	// what is missing.
	Check(ctx context.Context, n *Network, a *Attachment) error
	// GC removes rules of network n's attachments whose key is not in
	// valid; with none left it removes n's shared rules too.
	GC(ctx context.Context, n *Network, valid []netconf.Key) error
	// Status reports whether the backend is usable (code 50 otherwise).
	Status(ctx context.Context) error
}

// Backend names accepted by New.
const (
	BackendNftables = "nftables"
	BackendIptables = "iptables"
	BackendNone     = "none"
)

var (
	// ErrInvalid marks a network or attachment the rules cannot express.
	ErrInvalid = cnierr.New(cnierr.InvalidConfig, "invalid packet filter request")
	// ErrPortInUse marks a host port another attachment already publishes.
	ErrPortInUse = cnierr.New(cnierr.PortInUse, "host port already published")
	// ErrUnavailable marks a backend that cannot be used on this host.
	ErrUnavailable = cnierr.New(cnierr.NotAvailable, "packet filter unavailable")
	// ErrMissing marks rules CHECK expected and did not find.
	ErrMissing = cnierr.New(cnierr.Internal, "packet filter rules missing")
)

// New returns a backend: "nftables" (default, also for ""), "iptables" or
// "none". The plugin runs in the host namespace; host is its handle (for
// the ruleset, conntrack and sysctls), store keeps what Del needs to find.
func New(name string, host *netns.Handle, store *state.Store) (Backend, error) {
	switch name {
	case "", BackendNftables:
		return newNft(host, store), nil
	case BackendIptables:
		return newIpt(host, store, IptablesOptions{})
	case BackendNone:
		return noneBackend{}, nil
	}
	return nil, fmt.Errorf("%w: firewall backend %q is not one of nftables|iptables|none", ErrInvalid, name)
}

// noneBackend programs nothing: for networks that ask for no filtering.
type noneBackend struct{}

func (noneBackend) Add(context.Context, *Network, *Attachment) error   { return nil }
func (noneBackend) Del(context.Context, *Network, netconf.Key) error   { return nil }
func (noneBackend) Check(context.Context, *Network, *Attachment) error { return nil }
func (noneBackend) GC(context.Context, *Network, []netconf.Key) error  { return nil }
func (noneBackend) Status(context.Context) error                       { return nil }
