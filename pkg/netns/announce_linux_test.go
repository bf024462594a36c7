package netns_test

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// TestAnnounce: a neighbour that cached another MAC for an address learns
// the announcing link's MAC from the gratuitous ARP (IPv4) and the
// unsolicited advertisement (IPv6).
func TestAnnounce(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	a, b := nettest.NewNeighbours(t)
	link := nettest.Link(t, a, "eth0")
	old, _ := net.ParseMAC("02:00:00:00:00:99")
	bl := nettest.Link(t, b, "eth0")
	nlb := b.NL(t)
	addrs := []netip.Addr{netip.MustParseAddr("198.51.100.5"), netip.MustParseAddr("2001:db8:5::5")}
	for _, ad := range addrs {
		n := &netlink.Neigh{LinkIndex: bl.Attrs().Index, State: netlink.NUD_REACHABLE, IP: ad.AsSlice(), HardwareAddr: old}
		if err := nlb.NeighSet(n); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Handle().Announce(link.Attrs().Index, link.Attrs().HardwareAddr, addrs); err != nil {
		t.Fatal(err)
	}
	for _, ad := range addrs {
		nettest.Eventually(t, 2*time.Second, "neighbour entry of "+ad.String(), func() error {
			ns, err := nlb.NeighList(bl.Attrs().Index, netlink.FAMILY_ALL)
			if err != nil {
				return err
			}
			for _, n := range ns {
				if n.IP.Equal(ad.AsSlice()) {
					if n.HardwareAddr.String() != link.Attrs().HardwareAddr.String() {
						return &net.AddrError{Err: "still " + n.HardwareAddr.String(), Addr: ad.String()}
					}
					return nil
				}
			}
			return &net.AddrError{Err: "no entry", Addr: ad.String()}
		})
	}
}
