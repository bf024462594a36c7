package main

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/reaper"
	"github.com/netdrivers/netdrivers/pkg/undo"
)

var (
	// ErrParent marks a master link that is missing, down or unusable.
	ErrParent = cnierr.New(cnierr.ParentLink, "parent link unavailable")
	// ErrIfExists marks a CNI_IFNAME already present in the container.
	ErrIfExists = cnierr.New(cnierr.InvalidEnv, "CNI_IFNAME already exists in CNI_NETNS")
)

// linkSpec describes the container's macvlan.
type linkSpec struct {
	Name       string // CNI_IFNAME
	Parent     netlink.Link
	Mode       netlink.MacvlanMode
	MTU        int              // 0: the parent's
	MAC        net.HardwareAddr // nil: random (passthru: the parent's)
	BCQueueLen uint32           // 0: kernel default
}

// findParent returns the master link in ns: the named one, or the
// interface of ns's default route when name is empty (as the reference).
// It must exist; a down one is accepted, as the reference does: the
// container's link waits for it (LOWERLAYERDOWN) until it comes up.
func findParent(ns *netns.Handle, name string) (netlink.Link, error) {
	nl, err := ns.Netlink()
	if err != nil {
		return nil, err
	}
	if name == "" {
		if name, err = defaultRouteLink(ns); err != nil {
			return nil, err
		}
	}
	l, err := nl.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("master %q does not exist in %s: %w", name, where(ns), ErrParent)
		}
		return nil, fmt.Errorf("find master %q: %w", name, err)
	}
	return l, nil
}

// defaultRouteLink names the link of the first default route in ns (IPv4
// first), which the reference takes as master when none is configured.
func defaultRouteLink(ns *netns.Handle) (string, error) {
	nl, err := ns.Netlink()
	if err != nil {
		return "", err
	}
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := nl.RouteList(nil, family)
		if err != nil {
			return "", fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones != 0 {
					continue
				}
			}
			idx := r.LinkIndex
			if idx == 0 && len(r.MultiPath) > 0 {
				idx = r.MultiPath[0].LinkIndex
			}
			if l, err := nl.LinkByIndex(idx); err == nil {
				return l.Attrs().Name, nil
			}
		}
	}
	return "", cnierr.Errorf(cnierr.InvalidConfig, `"master" is not set and %s has no default route to take it from`, where(ns))
}

// where names ns for messages: the plugin's own or the container's.
func where(ns *netns.Handle) string {
	if ns.IsSelf() {
		return "the host's network namespace"
	}
	return "the container's network namespace " + ns.Path
}

// addMacvlan creates the container's macvlan from parentNS (the host, or
// the container with linkInContainer) directly inside cont, named
// s.Name, down. On error nothing is left.
// Equivalent to: ip link add link PARENT name NAME netns CONT mtu MTU
// address MAC type macvlan mode MODE bcqueuelen N
func addMacvlan(parentNS, cont *netns.Handle, s linkSpec) (_ netlink.Link, err error) {
	pnl, err := parentNS.Netlink()
	if err != nil {
		return nil, err
	}
	cnl, err := cont.Netlink()
	if err != nil {
		return nil, err
	}
	var u undo.Stack
	defer u.OnError(&err)

	la := netlink.NewLinkAttrs()
	la.Name, la.MTU, la.HardwareAddr, la.ParentIndex = s.Name, s.MTU, s.MAC, s.Parent.Attrs().Index
	if parentNS != cont {
		la.Namespace = netlink.NsFd(cont.Fd())
	}
	mv := &netlink.Macvlan{LinkAttrs: la, Mode: s.Mode, BCQueueLen: s.BCQueueLen}
	err = pnl.LinkAdd(mv)
	if errors.Is(err, unix.EEXIST) {
		if _, lerr := cnl.LinkByName(s.Name); lerr == nil || !isNotFound(lerr) {
			return nil, fmt.Errorf("%q: %w", s.Name, ErrIfExists)
		}
		// Older kernels check the name in the creating namespace too:
		// create under a temporary name and rename inside the container.
		err = addRenamed(pnl.Handle, cnl.Handle, mv, s.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("create macvlan %q on %q: %w", s.Name, s.Parent.Attrs().Name, classifyAdd(err, s))
	}
	u.Push(func() error { return delMacvlan(parentNS, cont, s.Name) })
	l, err := cnl.LinkByName(s.Name)
	if err != nil {
		return nil, fmt.Errorf("find %q in the container: %w", s.Name, err)
	}
	return l, nil
}

func addRenamed(pnl, cnl *netlink.Handle, mv *netlink.Macvlan, name string) error {
	tmp := fmt.Sprintf("mvtmp%08x", os.Getpid()&0xffffffff)
	mv.Name = tmp
	if err := pnl.LinkAdd(mv); err != nil {
		return err
	}
	l, err := cnl.LinkByName(tmp)
	if err == nil {
		err = cnl.LinkSetName(l, name)
	}
	if err != nil {
		if l != nil {
			cnl.LinkDel(l)
		}
		return fmt.Errorf("rename %q to %q: %w", tmp, name, err)
	}
	mv.Name = name
	return nil
}

// classifyAdd explains the kernel's terse answers to a macvlan create.
func classifyAdd(err error, s linkSpec) error {
	parent := s.Parent.Attrs().Name
	switch {
	case errors.Is(err, unix.EADDRINUSE):
		return cnierr.Errorf(cnierr.InvalidConfig, "mac %s is already used by another macvlan on %q: %w", s.MAC, parent, err)
	case errors.Is(err, unix.EINVAL) && s.Mode == netlink.MACVLAN_MODE_PASSTHRU:
		return fmt.Errorf("%q already has macvlans, and passthru needs it alone (%w): %w", parent, err, ErrParent)
	case errors.Is(err, unix.EINVAL):
		return fmt.Errorf("%q is taken by a passthru macvlan or cannot carry macvlans (%w): %w", parent, err, ErrParent)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("%q is in use by another link type, such as ipvlan (%w): %w", parent, err, ErrParent)
	}
	return err
}

// delMacvlan deletes the macvlan named name in ns, through host's reaper
// when host is the plugin's namespace. A missing link, or one that is not
// a macvlan (not ours to remove), is left alone.
// Equivalent to: ip -n NS link del NAME type macvlan
func delMacvlan(host, ns *netns.Handle, name string) error {
	if err := reaper.DelLink(host, ns, name, "macvlan"); err != nil && !errors.Is(err, netns.ErrWrongType) {
		return err
	}
	return nil
}

// setUp brings link up inside ns.
// Equivalent to: ip -n NS link set NAME up
func setUp(ns *netns.Handle, l netlink.Link) error {
	nl, err := ns.Netlink()
	if err != nil {
		return err
	}
	if err := nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %q up: %w", l.Attrs().Name, err)
	}
	return nil
}

func isNotFound(err error) bool { return netns.IsLinkNotFound(err) }
