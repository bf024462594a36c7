package netns

import (
	"errors"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
)

// AddrList lists a link's addresses through nl, retrying a dump the kernel
// interrupted (NLM_F_DUMP_INTR: addresses changed meanwhile, as they do on
// a busy node), which netlinksafe does for its own dumps but not this one.
// Equivalent to: ip -n NS addr show dev LINK
func AddrList(nl netlinksafe.Handle, link netlink.Link, family int) ([]netlink.Addr, error) {
	var (
		addrs []netlink.Addr
		err   error
	)
	for range 5 {
		addrs, err = nl.AddrList(link, family)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return addrs, err
		}
	}
	return addrs, err
}

// addrLister is nl with AddrList retried (for code that takes an interface).
type addrLister struct{ nl netlinksafe.Handle }

func (a addrLister) AddrList(link netlink.Link, family int) ([]netlink.Addr, error) {
	return AddrList(a.nl, link, family)
}
