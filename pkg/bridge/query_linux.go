package bridge

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/netns"
)

// Reads that ask the kernel for one link's data instead of filtering a
// dump of every link or address: on a node with hundreds of ports the
// dumps made CHECK grow with the number of attachments.

// nlaTypeMask strips NLA_F_NESTED and NLA_F_NET_BYTEORDER from a type.
const nlaTypeMask = 0x3fff

// portFlags reads the hairpin and isolated flags of the bridge port with
// index from its own RTM_GETLINK answer, which carries them in
// IFLA_INFO_SLAVE_DATA (LinkGetProtinfo dumps every port of every bridge).
// Equivalent to: ip -d link show dev PORT
func portFlags(host *netns.Handle, index int) (PortFlags, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, 0)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	msgs, err := host.Execute(req, unix.RTM_NEWLINK)
	if err != nil {
		return PortFlags{}, err
	}
	if len(msgs) == 0 || len(msgs[0]) < unix.SizeofIfInfomsg {
		return PortFlags{}, errors.New("no link in the answer")
	}
	info, err := nested(msgs[0][unix.SizeofIfInfomsg:], unix.IFLA_LINKINFO)
	if err != nil {
		return PortFlags{}, err
	}
	var kind string
	var data []byte
	for _, a := range info {
		switch a.Attr.Type & nlaTypeMask {
		case unix.IFLA_INFO_SLAVE_KIND:
			kind = strings.TrimRight(string(a.Value), "\x00")
		case unix.IFLA_INFO_SLAVE_DATA:
			data = a.Value
		}
	}
	if kind != "bridge" {
		return PortFlags{}, fmt.Errorf("link %d is not a bridge port", index)
	}
	attrs, err := nl.ParseRouteAttr(data)
	if err != nil {
		return PortFlags{}, err
	}
	var f PortFlags
	for _, a := range attrs {
		on := len(a.Value) > 0 && a.Value[0] != 0
		switch a.Attr.Type & nlaTypeMask {
		case nl.IFLA_BRPORT_MODE:
			f.Hairpin = on
		case nl.IFLA_BRPORT_ISOLATED:
			f.Isolated = on
		}
	}
	return f, nil
}

// nested returns the attributes inside attribute typ of attrs.
func nested(attrs []byte, typ uint16) ([]syscall.NetlinkRouteAttr, error) {
	as, err := nl.ParseRouteAttr(attrs)
	if err != nil {
		return nil, err
	}
	for _, a := range as {
		if a.Attr.Type&nlaTypeMask == typ {
			return nl.ParseRouteAttr(a.Value)
		}
	}
	return nil, fmt.Errorf("no attribute %d in the answer", typ)
}

// linkAddrs lists the addresses of the link with index, of both
// families, asking the kernel to filter by link (a strict dump): an
// unfiltered dump returns every address of the node.
// Equivalent to: ip addr show dev LINK
func linkAddrs(host *netns.Handle, index int) ([]netip.Prefix, error) {
	var out []netip.Prefix
	err := host.Do(func() error {
		for range 5 { // a dump interrupted by a concurrent change is asked again
			var interrupted bool
			var err error
			out, interrupted, err = dumpLinkAddrs(index)
			if err != nil || !interrupted {
				return err
			}
		}
		return errors.New("address dump interrupted five times")
	})
	return out, err
}

func dumpLinkAddrs(index int) (out []netip.Prefix, interrupted bool, err error) {
	s, err := nl.Subscribe(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, false, err
	}
	defer s.Close()
	if err := unix.SetsockoptInt(s.GetFd(), unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK, 1); err != nil {
		return nil, false, err
	}
	req := nl.NewNetlinkRequest(unix.RTM_GETADDR, unix.NLM_F_DUMP)
	msg := nl.NewIfAddrmsg(unix.AF_UNSPEC)
	msg.Index = uint32(index)
	req.AddData(msg)
	if err := s.Send(req); err != nil {
		return nil, false, err
	}
	for {
		msgs, _, err := s.Receive()
		if err != nil {
			return nil, false, err
		}
		for _, m := range msgs {
			if m.Header.Seq != req.Seq {
				continue
			}
			interrupted = interrupted || m.Header.Flags&unix.NLM_F_DUMP_INTR != 0
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return out, interrupted, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if errno := int32(nl.NativeEndian().Uint32(m.Data[:4])); errno != 0 {
						return nil, false, fmt.Errorf("address dump: %w", unix.Errno(-errno))
					}
				}
				return out, interrupted, nil
			case unix.RTM_NEWADDR:
				if p, ok := parseAddr(m.Data, index); ok {
					out = append(out, p)
				}
			}
		}
	}
}

// parseAddr is the prefix of one RTM_NEWADDR message of link index: its
// local address (IFA_LOCAL, else IFA_ADDRESS) with its prefix length.
func parseAddr(b []byte, index int) (netip.Prefix, bool) {
	if len(b) < unix.SizeofIfAddrmsg {
		return netip.Prefix{}, false
	}
	m := nl.DeserializeIfAddrmsg(b)
	if int(m.Index) != index {
		return netip.Prefix{}, false
	}
	attrs, err := nl.ParseRouteAttr(b[unix.SizeofIfAddrmsg:])
	if err != nil {
		return netip.Prefix{}, false
	}
	var local, addr []byte
	for _, a := range attrs {
		switch a.Attr.Type {
		case unix.IFA_LOCAL:
			local = a.Value
		case unix.IFA_ADDRESS:
			addr = a.Value
		}
	}
	if local != nil {
		addr = local
	}
	ip, ok := netip.AddrFromSlice(addr)
	if !ok {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(ip.Unmap(), int(m.Prefixlen)), true
}
