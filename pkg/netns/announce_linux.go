package netns

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"unsafe"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Announce sends, out of link ifIndex inside h, a gratuitous ARP for each
// IPv4 address and an unsolicited neighbour advertisement for each IPv6
// one, so that neighbours holding another MAC for a (reused) address
// learn mac at once, not when their entry times out. mac is the link's
// own. The sysctls arp_notify/ndisc_notify that the reference writes are
// avoided: every /proc/sys lookup costs O(namespaces) on a busy node.
func (h *Handle) Announce(ifIndex int, mac net.HardwareAddr, addrs []netip.Addr) error {
	v4, v6 := split(addrs)
	icmp := -1
	err := h.Do(func() (err error) { // one visit for both
		if len(v4) > 0 {
			if err = garp(ifIndex, mac); err != nil {
				return err
			}
		}
		if len(v6) > 0 {
			icmp, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
		}
		return err
	})
	if icmp >= 0 {
		defer unix.Close(icmp)
	}
	if err != nil {
		return fmt.Errorf("announce %v: %w", addrs, err)
	}
	var errs []error
	for _, a := range v6 {
		errs = append(errs, sendNA(icmp, ifIndex, mac, a))
	}
	return errors.Join(errs...)
}

// SetNDiscNotify sets ifName's ndisc_notify inside h, so that the kernel
// announces the link's IPv6 addresses when its MAC changes later (a
// chained tuning "mac"), as the reference's setting does. It opens
// /proc/sys (IPv6 has no netlink setter), which costs O(namespaces): call
// it only for links with IPv6 addresses, and after Announce, whose MAC
// change would otherwise make the kernel send a second advertisement.
// Equivalent to: ip netns exec NS sysctl -w net.ipv6.conf.IF.ndisc_notify=1
func (h *Handle) SetNDiscNotify(ifName string) error {
	return h.Do(func() error { return setNDiscNotify(ifName) })
}

func setNDiscNotify(ifName string) error {
	p := "/proc/sys/net/ipv6/conf/" + ifName + "/ndisc_notify"
	if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("set ndisc_notify on %q: %w", ifName, err)
	}
	return nil
}

// AnnounceCurrent is AnnounceLink for a helper that runs after ADD has
// answered, beside a chained plugin that may set the link's MAC (tuning
// "mac") at any moment: it never writes the MAC, which could undo that
// change. The kernel's own announcements of a MAC change (arp_notify,
// ndisc_notify) are set first; then the link's MAC is read and announced,
// the gratuitous ARP from an AF_PACKET socket (whose close waits for an
// RCU grace period, which a helper can afford), and read again: if it
// changed meanwhile, the kernel's announcement of the change may have gone
// out before ours, so the new MAC is announced once more.
func (h *Handle) AnnounceCurrent(ifIndex int, ifName string, addrs []netip.Addr) error {
	v4, v6 := split(addrs)
	pkt, icmp := -1, -1
	err := h.Do(func() (err error) {
		if len(v4) > 0 {
			if err = setARPNotify(ifIndex); err != nil {
				return err
			}
			pkt, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
			if err != nil {
				return err
			}
		}
		if len(v6) > 0 {
			if err = setNDiscNotify(ifName); err != nil {
				return err
			}
			icmp, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
		}
		return err
	})
	for _, fd := range []int{pkt, icmp} {
		if fd >= 0 {
			defer unix.Close(fd)
		}
	}
	if err != nil {
		return fmt.Errorf("announce %v: %w", addrs, err)
	}
	nl, err := h.Netlink()
	if err != nil {
		return err
	}
	var sent net.HardwareAddr
	for range 3 { // a MAC still changing after that has the kernel announce it
		l, err := nl.LinkByIndex(ifIndex)
		if err != nil {
			return fmt.Errorf("announce %v: %w", addrs, err)
		}
		mac := l.Attrs().HardwareAddr
		if bytes.Equal(mac, sent) {
			return nil
		}
		var errs []error
		for _, a := range v4 {
			errs = append(errs, sendARP(pkt, ifIndex, mac, a))
		}
		for _, a := range v6 {
			errs = append(errs, sendNA(icmp, ifIndex, mac, a))
		}
		if err := errors.Join(errs...); err != nil {
			return err
		}
		sent = mac
	}
	return nil
}

func split(addrs []netip.Addr) (v4, v6 []netip.Addr) {
	for _, a := range addrs {
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	return v4, v6
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// sendARP broadcasts, on the AF_PACKET socket fd, the gratuitous ARP
// request that arp_notify sends: sender and target a, sender mac.
func sendARP(fd, ifIndex int, mac net.HardwareAddr, a netip.Addr) error {
	msg := make([]byte, 28)
	binary.BigEndian.PutUint16(msg[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(msg[2:], 0x0800) // IPv4
	msg[4], msg[5] = 6, 4
	binary.BigEndian.PutUint16(msg[6:], 1) // request
	ip := a.As4()
	copy(msg[8:], mac)
	copy(msg[14:], ip[:])
	copy(msg[24:], ip[:]) // target MAC (18:24) stays zero
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifIndex, Halen: 6,
		Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	if err := unix.Sendto(fd, msg, 0, to); err != nil {
		return fmt.Errorf("gratuitous ARP for %s: %w", a, err)
	}
	return nil
}

// ipv4DevconfARPNotify is IPV4_DEVCONF_ARP_NOTIFY (linux/ip.h).
const ipv4DevconfARPNotify = 22

// garp has the kernel send the gratuitous ARPs, for every IPv4 address of
// the link, over netlink in the current namespace: the link's own
// arp_notify (the reference's setting, through IFLA_INET_CONF, not
// /proc/sys), then its MAC set to itself, which raises NETDEV_CHANGEADDR.
// An AF_PACKET socket would do too, but closing one waits for an RCU
// grace period (synchronize_net): ~15 ms, most of a macvlan ADD.
func garp(ifIndex int, mac net.HardwareAddr) error {
	if err := setARPNotify(ifIndex); err != nil {
		return err
	}
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(ifIndex)
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFLA_ADDRESS, mac))
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("gratuitous ARP: %w", err)
	}
	return nil
}

// setARPNotify sets the link's own arp_notify, over netlink in the
// current namespace.
func setARPNotify(ifIndex int) error {
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(ifIndex)
	req.AddData(msg)
	spec := nl.NewRtAttr(unix.IFLA_AF_SPEC, nil)
	spec.AddRtAttr(unix.AF_INET, nil).AddRtAttr(unix.IFLA_INET_CONF, nil).
		AddRtAttr(ipv4DevconfARPNotify, nl.Uint32Attr(1))
	req.AddData(spec)
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("arp_notify: %w", err)
	}
	return nil
}

// sendNA sends an unsolicited, overriding neighbour advertisement for a to
// all nodes, with the target link-layer address option.
func sendNA(fd, ifIndex int, mac net.HardwareAddr, a netip.Addr) error {
	for _, o := range [][2]int{{unix.IPV6_MULTICAST_HOPS, 255}, {unix.IPV6_MULTICAST_IF, ifIndex}} {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, o[0], o[1]); err != nil {
			return fmt.Errorf("neighbour advertisement for %s: %w", a, err)
		}
	}
	msg := make([]byte, 32)
	msg[0] = 136                                    // neighbour advertisement (checksum by the kernel)
	binary.BigEndian.PutUint32(msg[4:], 0x20000000) // override
	t := a.As16()
	copy(msg[8:], t[:])     // target
	msg[24], msg[25] = 2, 1 // target link-layer address, 8 bytes
	copy(msg[26:], mac)
	// The source is a itself (IPV6_PKTINFO), as ndisc_notify sends it.
	oob := make([]byte, unix.CmsgSpace(unix.SizeofInet6Pktinfo))
	ch := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	ch.Level, ch.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
	ch.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
	pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
	pi.Addr, pi.Ifindex = a.As16(), uint32(ifIndex)
	to := &unix.SockaddrInet6{Addr: netip.MustParseAddr("ff02::1").As16(), ZoneId: uint32(ifIndex)}
	if _, err := unix.SendmsgN(fd, msg, oob, to, 0); err != nil {
		return fmt.Errorf("neighbour advertisement for %s: %w", a, err)
	}
	return nil
}

// AnnounceLink is Announce, then, for a link with IPv6 addresses,
// SetNDiscNotify: the link announces mac now and the kernel any later MAC
// change, as with the reference's arp_notify and ndisc_notify.
func (h *Handle) AnnounceLink(ifIndex int, ifName string, mac net.HardwareAddr, addrs []netip.Addr) error {
	err := h.Announce(ifIndex, mac, addrs)
	if slices.ContainsFunc(addrs, netip.Addr.Is6) {
		err = errors.Join(err, h.SetNDiscNotify(ifName))
	}
	return err
}
