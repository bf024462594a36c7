package netns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Announce sends, out of link ifIndex inside h, a gratuitous ARP for each
// IPv4 address and an unsolicited neighbour advertisement for each IPv6
// one, so that neighbours holding another MAC for a (reused) address
// learn mac at once, not when their entry times out. It is what the
// kernel's arp_notify/ndisc_notify send at link up, without writing those
// sysctls: every /proc/sys lookup costs O(namespaces) on a busy node.
// Equivalent to: arping -U -c1 -I IF ADDR; (ICMPv6 NA, override, to ff02::1)
func (h *Handle) Announce(ifIndex int, mac net.HardwareAddr, addrs []netip.Addr) error {
	var v4, v6 []netip.Addr
	for _, a := range addrs {
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	arp, icmp := -1, -1
	err := h.Do(func() (err error) { // one visit for both sockets
		if len(v4) > 0 {
			if arp, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP))); err != nil {
				return err
			}
		}
		if len(v6) > 0 {
			icmp, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
		}
		return err
	})
	for _, fd := range []int{arp, icmp} {
		if fd >= 0 {
			defer unix.Close(fd)
		}
	}
	if err != nil {
		return fmt.Errorf("announce %v: %w", addrs, err)
	}
	var errs []error
	for _, a := range v4 {
		errs = append(errs, sendGARP(arp, ifIndex, mac, a))
	}
	for _, a := range v6 {
		errs = append(errs, sendNA(icmp, ifIndex, mac, a))
	}
	return errors.Join(errs...)
}

// sendGARP broadcasts an ARP request for a from a, as Linux's arp_notify.
func sendGARP(fd, ifIndex int, mac net.HardwareAddr, a netip.Addr) error {
	ip := a.As4()
	pkt := make([]byte, 28)
	binary.BigEndian.PutUint16(pkt[0:], 1)             // Ethernet
	binary.BigEndian.PutUint16(pkt[2:], unix.ETH_P_IP) // IPv4
	pkt[4], pkt[5] = 6, 4                              // address lengths
	binary.BigEndian.PutUint16(pkt[6:], 1)             // request
	copy(pkt[8:], mac)                                 // sender MAC
	copy(pkt[14:], ip[:])                              // sender IP
	copy(pkt[24:], ip[:])                              // target IP (target MAC zero)
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifIndex, Halen: 6,
		Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	if err := unix.Sendto(fd, pkt, 0, to); err != nil {
		return fmt.Errorf("gratuitous ARP for %s: %w", a, err)
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

func htons(v uint16) uint16 { return v<<8 | v>>8 }
