package dnat

import (
	"net"
	"testing"

	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// TestConntrackCount: the one-request entry count that lets flushUDP skip
// its dump sees a namespace's entries and no others.
func TestConntrackCount(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	ns := nettest.NewNS(t)
	var n uint32
	ns.MustDo(t, func() (err error) { n, err = conntrackCount(); return err })
	if n != 0 {
		t.Fatalf("a fresh namespace counts %d conntrack entries", n)
	}
	// Conntrack runs in a namespace once a rule needs it.
	ns.MustRun(t, "nft", "add", "table", "inet", "ctt")
	ns.MustRun(t, "nft", "add chain inet ctt out { type filter hook output priority 0 ; }")
	ns.MustRun(t, "nft", "add", "rule", "inet", "ctt", "out", "ct", "state", "new", "counter")
	ns.MustDo(t, func() error {
		c, err := net.Dial("udp", "127.0.0.1:9") // discard: the datagram makes an entry
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("x"))
		return err
	})
	ns.MustDo(t, func() (err error) { n, err = conntrackCount(); return err })
	if n == 0 {
		t.Error("conntrack count stayed 0 after a UDP datagram")
	}
}
