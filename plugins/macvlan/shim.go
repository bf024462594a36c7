package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/ipam"
	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/state"
	"github.com/netdrivers/netdrivers/pkg/undo"
)

// The host shim: a bridge-mode macvlan of the host's own on a parent, so
// the host reaches the parent's macvlan containers (the kernel never
// delivers between a parent and its macvlans). One shim per parent,
// shared by every network on it. State under <root>/macvlan/shim/<parent>/:
//
//	<nethash>.json           the network's shim addresses (shimNet)
//	<nethash>/<keyhash>.json one reference per attachment (shimRef)
//
// The shim goes when its parent holds no network; a network's addresses
// go when it holds no reference. All of it under the parent's lock.

// ErrNotShim marks a link under the shim's name that is not our shim.
var ErrNotShim = cnierr.New(cnierr.InvalidConfig, "link in the way of the host shim")

// shimName is the host shim's link name for parent: "mvshim" and 9 hex
// digits of the parent's hash.
func shimName(parent string) string { return "mvshim" + netconf.NetworkHash(parent)[:9] }

// shimPoolKey is the attachment under which the shim holds its address in
// a network's pool, so that the allocator and GC account for it.
func shimPoolKey(network, parent string) netconf.Key {
	return netconf.Key{Network: network, ContainerID: "netdrivers-shim-" + netconf.NetworkHash(parent)[:12], IfName: "shim"}
}

type shimNet struct {
	Network string   `json:"network"`
	Addrs   []string `json:"addrs"` // single addresses
	Pooled  bool     `json:"pooled,omitempty"`
}

type shimRef struct {
	Network     string   `json:"network"`
	ContainerID string   `json:"containerID"`
	IfName      string   `json:"ifname"`
	Addrs       []string `json:"addrs"` // the container's, routed via the shim
}

func (r *shimRef) key() netconf.Key {
	return netconf.Key{Network: r.Network, ContainerID: r.ContainerID, IfName: r.IfName}
}

// shim operates the host shim of one parent, with its lock held.
type shim struct {
	st     *state.Store
	host   *netns.Handle
	parent string
	ipam   *ipam.Config // the network's, for a pooled address; may be nil
}

func (s *shim) dir() string { return path.Join("macvlan", "shim", s.parent) }
func (s *shim) netFile(network string) string {
	return path.Join(s.dir(), netconf.NetworkHash(network)+".json")
}
func (s *shim) refDir(network string) string { return path.Join(s.dir(), netconf.NetworkHash(network)) }
func (s *shim) refFile(k netconf.Key) string {
	return path.Join(s.refDir(k.Network), k.Hash()+".json")
}

// lockShim takes parent's shim lock.
func lockShim(ctx context.Context, st *state.Store, parent string) (func(), error) {
	l, err := st.Lock(ctx, "macvlan-shim-"+parent)
	if err != nil {
		return nil, fmt.Errorf("lock host shim of %q: %w", parent, err)
	}
	return func() { l.Unlock() }, nil
}

// attach routes key's container addresses through parent's shim, creating
// the shim and the network's shim addresses as needed. On error nothing
// is left; on success the undo stack learns how to take it back.
func (s *shim) attach(ctx context.Context, parent netlink.Link, c *Conf, key netconf.Key, addrs []netip.Prefix, u *undo.Stack) error {
	// The reference goes first, naming every container address, so that a
	// DEL after a crash anywhere below finds the shim, its routes and the
	// network's addresses to take back (routes never made are "gone").
	ref := &shimRef{Network: key.Network, ContainerID: key.ContainerID, IfName: key.IfName}
	for _, a := range addrs {
		ref.Addrs = append(ref.Addrs, a.Addr().String())
	}
	if err := s.st.Put(s.refFile(key), ref); err != nil {
		return err
	}
	u.Push(func() error { return s.st.Del(s.refFile(key)) })
	link, created, err := s.ensureLink(parent)
	if err != nil {
		return err
	}
	if created {
		u.Push(func() error { return s.delLink() })
	}
	sn, err := s.ensureNet(ctx, link, c, key.Network, created, u)
	if err != nil {
		return err
	}
	routed := ref.Addrs[:0:0]
	for _, a := range addrs {
		src, ok := sameFamily(sn.Addrs, a.Addr())
		if !ok {
			continue // no shim address of that family: nothing to route from
		}
		r := shimRoute(link, a.Addr(), src)
		if err := s.nl().RouteReplace(r); err != nil {
			return fmt.Errorf("route %s via host shim %q: %w", a.Addr(), link.Attrs().Name, err)
		}
		u.Push(func() error { return ignoreGone(s.nl().RouteDel(r)) })
		routed = append(routed, a.Addr().String())
	}
	if len(routed) == len(ref.Addrs) {
		return nil
	}
	ref.Addrs = routed // what CHECK expects routed
	return s.st.Put(s.refFile(key), ref)
}

// detach drops key's reference and routes, then whatever no reference
// needs any more. Gone is success.
func (s *shim) detach(ctx context.Context, key netconf.Key) error {
	var ref shimRef
	ok, err := s.st.Get(s.refFile(key), &ref)
	var errs []error
	if err != nil {
		errs = append(errs, err) // corrupt: drop it below all the same
	}
	if ok && err == nil {
		errs = append(errs, s.delRoutes(ref.Addrs))
	}
	// The reference goes last, once the shim is pruned as if it were
	// gone: a DEL killed in between finds the shim again by it.
	perr := s.prune(ctx, key.Network, key.Hash()+".json")
	errs = append(errs, perr)
	if ok && perr == nil {
		errs = append(errs, s.st.Del(s.refFile(key)))
		os.Remove(s.st.Path(s.refDir(key.Network))) // when it was the last; best effort
	}
	return errors.Join(errs...)
}

func (s *shim) delRoutes(addrs []string) error {
	l, err := s.nl().LinkByName(shimName(s.parent))
	if err != nil {
		if isNotFound(err) {
			return nil // the routes went with the link
		}
		return err
	}
	var errs []error
	for _, a := range addrs {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			continue
		}
		errs = append(errs, ignoreGone(s.nl().RouteDel(shimRoute(l, ip, netip.Addr{}))))
	}
	return errors.Join(errs...)
}

// prune removes network's shim addresses if it holds no reference on the
// parent any more (but the one named except, which is going), and the
// shim itself if no network does.
func (s *shim) prune(ctx context.Context, network, except string) error {
	if has, err := hasEntries(s.st.Path(s.refDir(network)), ".json", except); err != nil || has {
		return err
	}
	if err := s.dropNet(ctx, network); err != nil {
		return err
	}
	if has, err := hasEntries(s.st.Path(s.dir()), ".json", ""); err != nil || has {
		return err
	}
	return s.delLink()
}

// ensureLink finds or creates the shim, up, on parent.
// Equivalent to: ip link add link PARENT name mvshimXXX type macvlan mode bridge; ip link set mvshimXXX up
func (s *shim) ensureLink(parent netlink.Link) (netlink.Link, bool, error) {
	name := shimName(s.parent)
	l, err := s.nl().LinkByName(name)
	if err == nil {
		mv, ok := l.(*netlink.Macvlan)
		if !ok || mv.ParentIndex != parent.Attrs().Index || mv.Mode != netlink.MACVLAN_MODE_BRIDGE {
			return nil, false, fmt.Errorf("%q is a %s, not the bridge-mode macvlan shim of %q: %w", name, l.Type(), s.parent, ErrNotShim)
		}
		if l.Attrs().Flags&net.FlagUp == 0 {
			if err := s.nl().LinkSetUp(l); err != nil {
				return nil, false, fmt.Errorf("set host shim %q up: %w", name, err)
			}
		}
		return l, false, nil
	}
	if !isNotFound(err) {
		return nil, false, fmt.Errorf("find host shim %q: %w", name, err)
	}
	la := netlink.NewLinkAttrs()
	la.Name, la.ParentIndex, la.Flags = name, parent.Attrs().Index, net.FlagUp
	// A MAC of ours, which udev keeps: one it replaced after the
	// containers had learnt it would cut them off from the host.
	la.HardwareAddr = netns.LocalMAC()
	mv := &netlink.Macvlan{LinkAttrs: la, Mode: netlink.MACVLAN_MODE_BRIDGE}
	if err := s.nl().LinkAdd(mv); err != nil {
		return nil, false, fmt.Errorf("create host shim %q on %q: %w", name, s.parent, classifyAdd(err, linkSpec{Parent: parent, Mode: mv.Mode}))
	}
	if l, err = s.nl().LinkByName(name); err == nil {
		err = s.nl().LinkSetUp(l)
	}
	if err != nil {
		s.delLink()
		return nil, false, fmt.Errorf("set host shim %q up: %w", name, err)
	}
	return l, true, nil
}

func (s *shim) delLink() error {
	l, err := s.nl().LinkByName(shimName(s.parent))
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return err
	}
	if _, ok := l.(*netlink.Macvlan); !ok {
		return nil
	}
	return ignoreGone(s.nl().LinkDel(l))
}

// ensureNet returns network's shim addresses, assigning them (hostShimIP,
// or one from the pool) on the network's first reference. A fresh shim
// (its parent came back) gets every network's recorded addresses again.
func (s *shim) ensureNet(ctx context.Context, link netlink.Link, c *Conf, network string, fresh bool, u *undo.Stack) (*shimNet, error) {
	var sn shimNet
	ok, err := s.st.Get(s.netFile(network), &sn)
	if err != nil {
		return nil, err
	}
	if fresh {
		if err := s.restoreAddrs(link); err != nil {
			return nil, err
		}
	}
	if ok {
		// Put back what an admin's flush may have taken; routes need
		// their source address.
		for _, a := range sn.Addrs {
			if ip, err := netip.ParseAddr(a); err == nil {
				if err := s.nl().AddrReplace(link, hostAddr(ip)); err != nil {
					return nil, fmt.Errorf("add %s to host shim %q: %w", ip, link.Attrs().Name, err)
				}
			}
		}
		return &sn, nil
	}
	sn = shimNet{Network: network}
	addrs := c.shimIPs
	if len(addrs) == 0 {
		if addrs, err = s.allocate(ctx, network); err != nil {
			return nil, err
		}
		sn.Pooled = true
		u.Push(func() error { return ipam.Release(ctx, s.ipam, shimPoolKey(network, s.parent)) })
	}
	for _, a := range addrs {
		if err := s.nl().AddrReplace(link, hostAddr(a)); err != nil {
			return nil, fmt.Errorf("add %s to host shim %q: %w", a, link.Attrs().Name, err)
		}
		u.Push(func() error { return ignoreGone(s.nl().AddrDel(link, hostAddr(a))) })
		sn.Addrs = append(sn.Addrs, a.String())
	}
	if err := s.st.Put(s.netFile(network), &sn); err != nil {
		return nil, err
	}
	u.Push(func() error { return s.st.Del(s.netFile(network)) })
	return &sn, nil
}

// allocate takes the shim's addresses from the network's pool.
func (s *shim) allocate(ctx context.Context, network string) ([]netip.Addr, error) {
	pc := *s.ipam
	pc.Requested = nil // the container's requested IPs are not the shim's
	key := shimPoolKey(network, s.parent)
	// A shim whose state was lost (a wiped state dir) still holds its
	// entry in the pool: take it again.
	if held, err := ipam.Addresses(ctx, &pc, key); err == nil && len(held) > 0 {
		var out []netip.Addr
		for _, p := range held {
			out = append(out, p.Addr())
		}
		return out, nil
	}
	res, err := ipam.Allocate(ctx, &pc, key)
	if err != nil {
		return nil, fmt.Errorf("address for the host shim: %w", err)
	}
	return ipam.Addrs(res), nil
}

// restoreAddrs puts every network's recorded addresses on a recreated shim.
func (s *shim) restoreAddrs(link netlink.Link) error {
	names, err := s.st.List(s.dir())
	if err != nil {
		return err
	}
	for _, n := range names {
		var sn shimNet
		if !strings.HasSuffix(n, ".json") {
			continue
		}
		if ok, err := s.st.Get(path.Join(s.dir(), n), &sn); !ok || err != nil {
			continue
		}
		for _, a := range sn.Addrs {
			if ip, err := netip.ParseAddr(a); err == nil {
				if err := s.nl().AddrReplace(link, hostAddr(ip)); err != nil {
					return fmt.Errorf("restore %s on host shim: %w", ip, err)
				}
			}
		}
	}
	return nil
}

// dropNet removes network's addresses from the shim and its pool.
func (s *shim) dropNet(ctx context.Context, network string) error {
	var sn shimNet
	ok, err := s.st.Get(s.netFile(network), &sn)
	if !ok {
		return s.dropUnrecorded(ctx, network)
	}
	var errs []error
	if err == nil {
		if l, lerr := s.nl().LinkByName(shimName(s.parent)); lerr == nil {
			for _, a := range sn.Addrs {
				if ip, perr := netip.ParseAddr(a); perr == nil {
					errs = append(errs, ignoreGone(s.nl().AddrDel(l, hostAddr(ip))))
				}
			}
		}
		if sn.Pooled && s.ipam != nil {
			errs = append(errs, ipam.Release(ctx, s.ipam, shimPoolKey(network, s.parent)))
		}
	}
	errs = append(errs, s.st.Del(s.netFile(network)))
	os.Remove(s.st.Path(s.refDir(network))) // empty by now, unless a DEL's reference waits to go; best effort
	return errors.Join(errs...)
}

// dropUnrecorded takes back what a network's first shim attach took from
// the pool before a kill kept it from recording it: the pool entry of the
// shim's pseudo-attachment (O(1) by key) and its addresses on the shim.
func (s *shim) dropUnrecorded(ctx context.Context, network string) error {
	if s.ipam == nil || !s.ipam.Builtin() {
		return nil
	}
	key := shimPoolKey(network, s.parent)
	held, err := ipam.Addresses(ctx, s.ipam, key)
	if err != nil || len(held) == 0 {
		return err
	}
	var errs []error
	if l, lerr := s.nl().LinkByName(shimName(s.parent)); lerr == nil {
		for _, p := range held {
			errs = append(errs, ignoreGone(s.nl().AddrDel(l, hostAddr(p.Addr()))))
		}
	}
	return errors.Join(append(errs, ipam.Release(ctx, s.ipam, key))...)
}

func (s *shim) nl() *netlink.Handle {
	nl, _ := s.host.Netlink() // opened by the caller before the lock
	return nl.Handle
}

// hostAddr is a shim address: a single host address, so that the shim
// adds no subnet route that would compete with the parent's own.
func hostAddr(a netip.Addr) *netlink.Addr {
	bits := a.BitLen()
	return &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, bits)}, Flags: unix.IFA_F_NODAD}
}

// shimRoute routes one container address through the shim, from src.
// Equivalent to: ip route replace ADDR/32 dev mvshimXXX scope link src SRC
func shimRoute(link netlink.Link, dst, src netip.Addr) *netlink.Route {
	bits := dst.BitLen()
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Scope: netlink.SCOPE_LINK,
		Dst: &net.IPNet{IP: dst.AsSlice(), Mask: net.CIDRMask(bits, bits)}}
	if src.IsValid() {
		r.Src = src.AsSlice()
	}
	return r
}

func sameFamily(addrs []string, a netip.Addr) (netip.Addr, bool) {
	for _, s := range addrs {
		if b, err := netip.ParseAddr(s); err == nil && b.Is4() == a.Is4() {
			return b, true
		}
	}
	return netip.Addr{}, false
}

// hasEntries reports whether dir holds a file ending in suffix other than
// except (temporary files of an interrupted write do not count). A missing
// dir holds none.
func hasEntries(dir, suffix, except string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		return false, cnierr.Wrap(cnierr.IOFailure, err)
	}
	defer f.Close()
	for {
		names, err := f.Readdirnames(64)
		for _, n := range names {
			if strings.HasSuffix(n, suffix) && !strings.HasPrefix(n, ".") && n != except {
				return true, nil
			}
		}
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		if err != nil {
			return false, cnierr.Wrap(cnierr.IOFailure, err)
		}
	}
}

func ignoreGone(err error) error {
	if err == nil || isNotFound(err) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}
