// Package ipam allocates container addresses: the reference host-local
// allocator served in-process on its own on-disk store (so either binary
// can share a data directory with the other), and any other IPAM plugin
// by delegation (exec through CNI_PATH).
package ipam

import (
	"context"
	"net/netip"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/netconf"
)

var (
	// ErrExhausted is a range set with no free address (code 100).
	ErrExhausted = cnierr.New(cnierr.PoolExhausted, "address pool exhausted")
	// ErrInUse is a requested address another attachment holds (code 7).
	ErrInUse = cnierr.New(cnierr.InvalidConfig, "requested address in use")
	// ErrDuplicate is an ADD for an attachment that already holds an address
	// in a range set (code 7, as the spec forbids two ADDs without DEL).
	ErrDuplicate = cnierr.New(cnierr.InvalidConfig, "attachment already holds an address")
	// ErrNotHeld is a CHECK that finds an address gone or someone else's.
	ErrNotHeld = cnierr.New(cnierr.InvalidConfig, "address not held by the attachment")
	// ErrStore is a store that cannot be read or written (code 5).
	ErrStore = cnierr.New(cnierr.IOFailure, "address store")
)

// Builtin reports whether c is served in-process (type host-local).
func (c *Config) Builtin() bool { return c != nil && c.Type == BuiltinType }

// Network is the network name the store is kept under.
func (c *Config) Network() string { return c.network }

// Subnets returns every range's subnet, without duplicates (built-in only;
// a delegated plugin's subnets are known from its result).
func (c *Config) Subnets() []netip.Prefix {
	return eachRange(c, func(r Range) netip.Prefix { return r.Subnet })
}

// Gateways returns every range's gateway (default network+1), without
// duplicates (built-in only).
func (c *Config) Gateways() []netip.Addr {
	return eachRange(c, func(r Range) netip.Addr { return r.Gateway })
}

// eachRange returns f of every built-in range, without duplicates.
func eachRange[T comparable](c *Config, f func(Range) T) []T {
	if !c.Builtin() {
		return nil
	}
	var out []T
	for _, set := range c.Ranges {
		for _, r := range set {
			if v := f(r); !slices.Contains(out, v) {
				out = append(out, v)
			}
		}
	}
	return out
}

// Allocate reserves addresses for key. Built-in: in-process, no exec. Otherwise
// an exec of c.Type from CNI_PATH with the original stdin. The result carries IPs
// (Address with prefix, Gateway), Routes and DNS (resolvConf), no Interfaces.
func Allocate(ctx context.Context, c *Config, key netconf.Key) (*current.Result, error) {
	switch {
	case c == nil: // no IPAM: L2 only
		return &current.Result{CNIVersion: current.ImplementedSpecVersion}, nil
	case c.Builtin():
		return allocate(ctx, c, key)
	}
	return delegateAdd(ctx, c)
}

// Release frees key's addresses: idempotent, needs no netns and no prevResult;
// built-in without walking the store in steady state (reverse index). Delegated: DelegateDel.
func Release(ctx context.Context, c *Config, key netconf.Key) error {
	if c.Builtin() {
		return release(ctx, c, key)
	}
	return delegateDel(ctx, c)
}

// Addresses returns what key holds (built-in: from the reverse index; delegated: nil, nil).
func Addresses(ctx context.Context, c *Config, key netconf.Key) ([]netip.Prefix, error) {
	if !c.Builtin() {
		return nil, nil
	}
	return addresses(ctx, c, key)
}

// Check verifies key still holds prev's addresses (built-in), or delegates CHECK.
func Check(ctx context.Context, c *Config, key netconf.Key, prev *current.Result) error {
	if c.Builtin() {
		return check(ctx, c, key, prev)
	}
	return delegateCheck(ctx, c, prev)
}

// GC releases every allocation of the network whose (containerID, ifname) is not in valid,
// continuing past errors; delegated: DelegateGC.
func GC(ctx context.Context, c *Config, valid []types.GCAttachment) error {
	if c.Builtin() {
		return gc(ctx, c, valid)
	}
	return delegateGC(ctx, c)
}

// Status: built-in — the store is writable (code 50 otherwise); never fails for a full pool.
// Delegated: DelegateStatus.
func Status(ctx context.Context, c *Config) error {
	if c.Builtin() {
		return status(c)
	}
	return delegateStatus(ctx, c)
}

// Prefixes are res's addresses with their prefix lengths, IPv4 unmapped.
func Prefixes(res *current.Result) []netip.Prefix {
	var out []netip.Prefix
	for _, ipc := range res.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
			ones, _ := ipc.Address.Mask.Size()
			out = append(out, netip.PrefixFrom(a.Unmap(), ones))
		}
	}
	return out
}

// Addrs are res's addresses, IPv4 unmapped.
func Addrs(res *current.Result) []netip.Addr {
	var out []netip.Addr
	for _, p := range Prefixes(res) {
		out = append(out, p.Addr())
	}
	return out
}
