package netns

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrWrongType is returned by DelLink for a link of another type.
var ErrWrongType = errors.New("link is of another type")

// IsLinkNotFound reports whether err says a link does not exist.
func IsLinkNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}

// LocalMAC is a random locally administered unicast MAC, for a link made
// in the host namespace. A MAC given at creation is one the kernel marks
// as set (addr_assign_type 3), which systemd-udevd's MACAddressPolicy
// leaves alone: a random one it would replace shortly after creation,
// behind the result's back and after neighbours learnt it.
func LocalMAC() net.HardwareAddr {
	v := rand.Uint64()
	return net.HardwareAddr{byte(v>>40)&0xfe | 0x02, byte(v >> 32), byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}

// DelLink deletes the link name in h when it is of type typ (as
// netlink.Link.Type says: "veth", "bridge", "macvlan"). A link that is
// gone is success; one of another type is left alone (ErrWrongType).
// Equivalent to: ip -n NS link del NAME type TYP
func (h *Handle) DelLink(name, typ string) error {
	l, err := h.LinkOfType(name, typ)
	if err != nil || l == nil {
		return err
	}
	nl, err := h.Netlink()
	if err != nil {
		return err
	}
	if err := nl.LinkDel(l); err != nil && !IsLinkNotFound(err) {
		return fmt.Errorf("delete %q: %w", name, err)
	}
	return nil
}

// LinkOfType finds the link name in h, to be deleted: nil when there is
// none, ErrWrongType when it is not a typ.
func (h *Handle) LinkOfType(name, typ string) (netlink.Link, error) {
	l, err := h.Link(name)
	if err != nil {
		if IsLinkNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("find %q: %w", name, err)
	}
	if l.Type() != typ {
		return nil, fmt.Errorf("delete %q: is a %s, not a %s: %w", name, l.Type(), typ, ErrWrongType)
	}
	return l, nil
}
