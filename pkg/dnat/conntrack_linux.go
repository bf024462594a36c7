package dnat

import (
	"errors"
	"fmt"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/netns"
)

// flushUDP deletes, in the host namespace, the UDP conntrack entries of
// the published host ports in both families, so that datagrams stop
// following entries made before the mapping changed (plugins#123).
// Equivalent to: conntrack -D -p udp --orig-port-dst PORT (-f ipv4, -f ipv6)
func flushUDP(host *netns.Handle, ports []uint16) error {
	if len(ports) == 0 {
		return nil
	}
	var (
		h   netlinksafe.Handle
		err error
	)
	if host.IsSelf() {
		h, err = netlinksafe.NewHandle(unix.NETLINK_NETFILTER)
	} else {
		h, err = netlinksafe.NewHandleAt(vnetns.NsHandle(host.Fd()), unix.NETLINK_NETFILTER)
	}
	if err != nil {
		return fmt.Errorf("open conntrack socket: %w", err)
	}
	defer h.Close()
	filters := make([]netlink.CustomConntrackFilter, 0, len(ports))
	for _, p := range ports {
		f := &netlink.ConntrackFilter{}
		if err := f.AddProtocol(unix.IPPROTO_UDP); err != nil {
			return err
		}
		if err := f.AddPort(netlink.ConntrackOrigDstPort, p); err != nil {
			return err
		}
		filters = append(filters, f)
	}
	var errs []error
	for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		if _, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, fam, filters...); err != nil {
			errs = append(errs, fmt.Errorf("flush udp conntrack entries of ports %v: %w", ports, err))
		}
	}
	return errors.Join(errs...)
}
