// Package veth creates and removes the veth pairs that join a container
// namespace to the host, named deterministically from the attachment.
package veth

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/undo"
)

// ErrExists is returned when a link of the requested name already exists.
var ErrExists = errors.New("link already exists")

// HostName is the host-side name of key's veth: "veth" and 11 hex digits
// of the key's hash (NetworkManager ignores veth*), so DEL and GC find it
// without a prevResult.
func HostName(key netconf.Key) string { return "veth" + key.Hash()[:11] }

// Spec describes a pair.
type Spec struct {
	HostName  string           // in the host namespace
	ContName  string           // in the container namespace (CNI_IFNAME)
	MTU       int              // 0: kernel default
	ContMAC   net.HardwareAddr // nil: random
	MasterIdx int              // host end enslaved to this link (a bridge); 0: none
	// NoLinkLocal leaves the container end without an IPv6 link-local
	// address (addr_gen_mode none), for an IPv4-only attachment: Docker
	// disables IPv6 there, and the autoconfiguration's multicast (DAD,
	// router and MLD solicitations) would be flooded to every bridge port.
	NoLinkLocal bool
	// HostNoIPv6 disables IPv6 on the host end before it comes up: a
	// bridge port needs no address of its own. Each host end's link-local
	// and multicast routes made the node's IPv6 routing table grow with
	// its ports, and the kernel walks that table on a port's link events
	// (carrier change, delete): veth creation took 3.2–3.8 ms at 900
	// ports with them, 2.2–2.4 ms without.
	HostNoIPv6 bool
}

// ip6AddrGenModeNone is IN6_ADDR_GEN_MODE_NONE (linux/if_link.h).
const ip6AddrGenModeNone = 1

// Pair is what Add made.
type Pair struct {
	Host, Cont netlink.Link
}

// Add creates a veth pair, s.HostName in host (enslaved to s.MasterIdx,
// up) and s.ContName in cont (up), in one create without a namespace
// move. On error nothing is left.
// Both MACs are chosen here (netns.LocalMAC), so udev keeps the host end's
// and no read-back is needed for the container end's.
// Equivalent to: ip link add HOST address HMAC mtu MTU master BR up numtxqueues 1 numrxqueues 1 type veth peer CONT address MAC numtxqueues 1 numrxqueues 1 netns CONT
// (and, with NoLinkLocal: ip -n CONT link set CONT addrgenmode none; with
// HostNoIPv6 the host end comes up after sysctl net.ipv6.conf.HOST.disable_ipv6=1)
func Add(host, cont *netns.Handle, s Spec) (_ Pair, err error) {
	hnl, err := host.Netlink()
	if err != nil {
		return Pair{}, err
	}
	cnl, err := cont.Netlink()
	if err != nil {
		return Pair{}, err
	}
	var u undo.Stack
	defer u.OnError(&err)

	if s.ContMAC == nil {
		s.ContMAC = netns.LocalMAC()
	}
	hl, err := create(host, cont, s)
	if err != nil {
		if errors.Is(err, unix.EEXIST) {
			return Pair{}, fmt.Errorf("create veth %q for %q: %w", s.HostName, s.ContName, existsErr(host, cont, s))
		}
		return Pair{}, fmt.Errorf("create veth %q for %q: %w", s.HostName, s.ContName, err)
	}
	u.Push(func() error { return Del(host, s.HostName) }) // deletes both ends

	var cl netlink.Link
	if hl == nil { // a kernel without the echo (before 6.3): read both ends back
		if hl, err = hnl.LinkByName(s.HostName); err != nil {
			return Pair{}, fmt.Errorf("find %q: %w", s.HostName, err)
		}
		if cl, err = cnl.LinkByName(s.ContName); err != nil {
			return Pair{}, fmt.Errorf("find %q in container: %w", s.ContName, err)
		}
	} else {
		la := netlink.NewLinkAttrs()
		// IFLA_LINK of the echo is the peer's index in its namespace.
		la.Name, la.Index, la.MTU, la.HardwareAddr = s.ContName, hl.Attrs().ParentIndex, hl.Attrs().MTU, s.ContMAC
		la.ParentIndex = hl.Attrs().Index
		cl = &netlink.Veth{LinkAttrs: la, PeerName: s.HostName}
	}
	if s.HostNoIPv6 {
		if err := host.Do(func() error { return disableIPv6(s.HostName) }); err != nil {
			return Pair{}, err
		}
		if err := hnl.LinkSetUp(hl); err != nil {
			return Pair{}, fmt.Errorf("set %q up: %w", s.HostName, err)
		}
	}
	if s.NoLinkLocal {
		// Before up, when the kernel would make it. A kernel without IPv6
		// refuses; that costs nothing.
		if err := cnl.LinkSetIP6AddrGenMode(cl, ip6AddrGenModeNone); err != nil && !errors.Is(err, unix.EAFNOSUPPORT) {
			return Pair{}, fmt.Errorf("no IPv6 link-local on %q: %w", s.ContName, err)
		}
	}
	if err := cnl.LinkSetUp(cl); err != nil {
		return Pair{}, fmt.Errorf("set %q up: %w", s.ContName, err)
	}
	return Pair{Host: hl, Cont: cl}, nil
}

// echoCreate asks the kernel to answer a create with the new host end
// (NLM_F_ECHO; Linux 6.3 and later honour it). Tests clear it to take the
// path of older kernels.
var echoCreate = true

// create makes the pair in one request: the host end, with a MAC of its
// own, enslaved to s.MasterIdx and, unless s.HostNoIPv6, up. It returns
// the host end from the kernel's echo, or nil when the kernel sent none.
// vishvananda/netlink's LinkAdd takes three requests for the same (create,
// read back for the index, enslave) and answers with nothing.
func create(host, cont *netns.Handle, s Spec) (netlink.Link, error) {
	flags := unix.NLM_F_CREATE | unix.NLM_F_EXCL | unix.NLM_F_ACK
	if echoCreate {
		flags |= unix.NLM_F_ECHO
	}
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, flags)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	if !s.HostNoIPv6 { // else up once IPv6 is off
		msg.Flags, msg.Change = unix.IFF_UP, unix.IFF_UP
	}
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(s.HostName)))
	req.AddData(nl.NewRtAttr(unix.IFLA_ADDRESS, netns.LocalMAC()))
	if s.MTU > 0 {
		req.AddData(nl.NewRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(s.MTU))))
	}
	if s.MasterIdx > 0 {
		req.AddData(nl.NewRtAttr(unix.IFLA_MASTER, nl.Uint32Attr(uint32(s.MasterIdx))))
	}
	oneQueue(req.AddData)
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("veth"))
	peer := info.AddRtAttr(nl.IFLA_INFO_DATA, nil).AddRtAttr(nl.VETH_INFO_PEER, nil)
	nl.NewIfInfomsgChild(peer, unix.AF_UNSPEC)
	peer.AddRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(s.ContName))
	peer.AddRtAttr(unix.IFLA_ADDRESS, s.ContMAC)
	if s.MTU > 0 {
		peer.AddRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(s.MTU)))
	}
	oneQueue(func(a nl.NetlinkRequestData) { peer.AddChild(a) })
	peer.AddRtAttr(unix.IFLA_NET_NS_FD, nl.Uint32Attr(uint32(cont.Fd())))
	req.AddData(info)
	msgs, err := host.Execute(req, unix.RTM_NEWLINK)
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		l, err := netlink.LinkDeserialize(nil, m)
		if err != nil || l.Attrs().Name != s.HostName {
			continue
		}
		// The echo goes out before the kernel enslaves the link.
		l.Attrs().MasterIndex = s.MasterIdx
		return l, nil
	}
	return nil, nil
}

// oneQueue asks for one transmit and one receive queue, the number a veth
// end uses unless told otherwise. Without it the kernel allocates one per
// possible CPU and then shrinks the transmit queues to one, which waits
// for an expedited RCU grace period, for each end: 0.34 against 0.26 ms
// per create on an idle 2-CPU node, more on a busy or larger one. What is
// lost: "ethtool -L" cannot raise the count later.
// Equivalent to: ip link add ... numtxqueues 1 numrxqueues 1 type veth peer ... numtxqueues 1 numrxqueues 1
func oneQueue(add func(nl.NetlinkRequestData)) {
	add(nl.NewRtAttr(unix.IFLA_NUM_TX_QUEUES, nl.Uint32Attr(1)))
	add(nl.NewRtAttr(unix.IFLA_NUM_RX_QUEUES, nl.Uint32Attr(1)))
}

// disableIPv6 turns IPv6 off on dev in the calling thread's namespace; a
// kernel without IPv6 has nothing to turn off.
// Equivalent to: sysctl -w net.ipv6.conf.DEV.disable_ipv6=1
func disableIPv6(dev string) error {
	err := os.WriteFile("/proc/sys/net/ipv6/conf/"+dev+"/disable_ipv6", []byte("1"), 0o644)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("disable IPv6 on %q: %w", dev, err)
	}
	return nil
}

// existsErr says which end's name is taken; an interface named CNI_IFNAME
// already in the container is the runtime's mistake (code 7 rather than 999).
func existsErr(host, cont *netns.Handle, s Spec) error {
	if _, err := cont.Link(s.ContName); err == nil {
		return cnierr.Errorf(cnierr.InvalidConfig, "container already has an interface %q: %w", s.ContName, ErrExists)
	}
	if _, err := host.Link(s.HostName); err == nil {
		return attachedErr(s.HostName)
	}
	return ErrExists
}

func attachedErr(hostName string) error {
	return cnierr.Errorf(cnierr.InvalidConfig, "host already has %q (is the container attached twice?): %w", hostName, ErrExists)
}

// Unused refuses a host end that exists: its attachment is live, and this
// is a second ADD without DEL. An ADD asks before it changes anything, as
// undoing it would take the live attachment's records and rules along.
func Unused(host *netns.Handle, hostName string) error {
	_, err := host.Link(hostName)
	switch {
	case err == nil:
		return attachedErr(hostName)
	case IsNotFound(err):
		return nil
	}
	return fmt.Errorf("find %q: %w", hostName, err)
}

// Del deletes the veth named name in ns (its peer goes with it). A link
// that is gone is success; a link of another type is an error.
// Equivalent to: ip link del NAME type veth
func Del(ns *netns.Handle, name string) error { return ns.DelLink(name, "veth") }

// IsNotFound reports whether err says a link does not exist.
func IsNotFound(err error) bool { return netns.IsLinkNotFound(err) }

// Check verifies that the container end name exists in cont, is a veth,
// is up, and (when mac is set) carries mac; and that its peer is hostName
// in host. It changes nothing.
func Check(host, cont *netns.Handle, hostName, contName string, mac net.HardwareAddr) error {
	cl, err := cont.Link(contName)
	if err != nil {
		return fmt.Errorf("container interface %q: %w", contName, err)
	}
	if _, ok := cl.(*netlink.Veth); !ok {
		return fmt.Errorf("container interface %q is a %s, not a veth", contName, cl.Type())
	}
	if cl.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("container interface %q is down", contName)
	}
	if mac != nil && cl.Attrs().HardwareAddr.String() != mac.String() {
		return fmt.Errorf("container interface %q has MAC %s, want %s", contName, cl.Attrs().HardwareAddr, mac)
	}
	hl, err := host.Link(hostName)
	if err != nil {
		return fmt.Errorf("host interface %q: %w", hostName, err)
	}
	// IFLA_LINK of a veth is its peer's index in the peer's namespace.
	if p := cl.Attrs().ParentIndex; p != 0 && p != hl.Attrs().Index {
		return fmt.Errorf("container interface %q is not the peer of host interface %q", contName, hostName)
	}
	if hl.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("host interface %q is down", hostName)
	}
	return nil
}
