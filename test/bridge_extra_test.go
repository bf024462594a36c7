package test

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// TestBridgeHostBindingAndAliases: hostBindingIP publishes ports without
// hostIP on that address only; the reference's ipMasqBackend and
// portIsolation names work.
func TestBridgeHostBindingAndAliases(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	n := newNode(t)
	nettest.AddAddr(t, n.host, "ndup0", "198.51.100.3/24") // a second node address
	list := bridgeConf(t, "bind", "nftables", "10.100.0.0/24", map[string]any{
		"hostBindingIP": "198.51.100.3", "firewallBackend": "", "ipMasqBackend": "iptables", "portIsolation": true})
	a := n.attach(t, list, ports("tcp//8080/80"))
	b := n.attach(t, list, nil)
	nettest.Listen(t, a.ns, "tcp", ":80", "A")
	wantFrom(t, n.outside, "tcp", "198.51.100.3:8080", "A ")
	if out, err := nettest.Dial(n.outside, "tcp", lanNode+":8080", 500*time.Millisecond); err == nil {
		t.Errorf("port published on %s answered on %s too: %q", "198.51.100.3", lanNode, out)
	}
	if out := n.host.MustRun(t, "iptables-save", "-t", "nat"); !strings.Contains(out, "NETDRIVERS") {
		t.Errorf("ipMasqBackend iptables: no NETDRIVERS chains in the nat table:\n%s", out)
	}
	nettest.Unreachable(t, a.ns, b.addr(false)) // portIsolation
	n.detach(t, list, a)
	n.detach(t, list, b)
}

// TestBridgeDelegatedIPAM: an ipam type other than host-local is exec'd
// (here the reference static plugin) for ADD, CHECK, DEL and GC.
func TestBridgeDelegatedIPAM(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	host, outside := nettest.NewNS(t), nettest.NewNS(t)
	nettest.NewVeth(t, host, "ndup0", lanNode+"/24", outside, "eth0", lanOutside+"/24")
	n := &node{host: host, outside: outside, cni: nettest.NewCNI(t, host, nettest.Bins(t), nettest.RefBins(t))}
	list := nettest.ConfList(t, map[string]any{"cniVersion": "1.1.0", "name": "static", "plugins": []any{map[string]any{
		"type": "host-local-bridge",
		"ipam": map[string]any{"type": "static", "addresses": []any{map[string]any{"address": "10.101.0.5/24", "gateway": "10.101.0.1"}}},
	}}})
	c := n.attach(t, list, nil)
	if c.addr(false) != "10.101.0.5" {
		t.Fatalf("address %q, want the static 10.101.0.5", c.addr(false))
	}
	nettest.Reachable(t, c.ns, "10.101.0.1")
	n.cni.MustCheck(t, list, c.rt)
	if err := n.cni.GetStatusNetworkList(context.Background(), list); err != nil {
		t.Errorf("STATUS: %v", err)
	}
	n.detach(t, list, c)
	gc(t, n, list)
}

// TestBridgeEnableDAD: enabledad keeps IPv6 duplicate address detection on
// the container's addresses; by default they carry IFA_F_NODAD.
func TestBridgeEnableDAD(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	n := newNode(t)
	for _, dad := range []bool{false, true} {
		list := bridgeConf(t, fmt.Sprintf("dad%v", dad), "nftables", "10.102.0.0/24", map[string]any{"enabledad": dad,
			"ipam": map[string]any{"subnet": nil, "ranges": [][]map[string]any{{{"subnet": "10.102.0.0/24"}}, {{"subnet": "2001:db8:102::/64"}}}}})
		c := n.attach(t, list, nil)
		addrs, err := c.ns.NL(t).AddrList(nettest.Link(t, c.ns, "eth0"), netlink.FAMILY_V6)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range addrs {
			if a.IP.IsGlobalUnicast() && (a.Flags&syscall.IFA_F_NODAD != 0) == dad {
				t.Errorf("enabledad=%v: %s has flags %#x", dad, a.IPNet, a.Flags)
			}
		}
		n.detach(t, list, c)
	}
}

// TestBridgeSCTPPublish: a published SCTP port is DNATed to the container.
// This kernel has no SCTP sockets, so a raw INIT chunk is sent from the LAN
// and read raw in the container (conntrack's checksum check is off in the
// test node; NAT rewrites the checksum anyway).
func TestBridgeSCTPPublish(t *testing.T) {
	eachBackend(t, func(t *testing.T, n *node, backend string) {
		n.host.Sysctl(t, "net/netfilter/nf_conntrack_checksum", "0")
		list := bridgeConf(t, "sctp", backend, "10.103.0.0/24", nil)
		c := n.attach(t, list, ports("sctp//3868/3869"))
		var rfd int
		c.ns.MustDo(t, func() (err error) { rfd, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, 132); return })
		defer syscall.Close(rfd)
		syscall.SetsockoptTimeval(rfd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &syscall.Timeval{Usec: 200000})
		var sfd int
		n.outside.MustDo(t, func() (err error) { sfd, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, 132); return })
		defer syscall.Close(sfd)
		dst := &syscall.SockaddrInet4{Addr: [4]byte(net.ParseIP(lanNode).To4())}
		nettest.Eventually(t, 3*time.Second, "SCTP INIT to the published port", func() error {
			if err := syscall.Sendto(sfd, sctpInit(40000, 3868), 0, dst); err != nil {
				return err
			}
			buf := make([]byte, 1500)
			for {
				nr, _, err := syscall.Recvfrom(rfd, buf, 0)
				if err != nil {
					return err
				}
				ihl := int(buf[0]&0x0f) * 4
				if nr >= ihl+4 && binary.BigEndian.Uint16(buf[ihl+2:]) == 3869 {
					return nil
				}
			}
		})
		n.detach(t, list, c)
	})
}

// sctpInit is an SCTP common header with one INIT chunk.
func sctpInit(src, dst uint16) []byte {
	b := make([]byte, 12+20)
	binary.BigEndian.PutUint16(b[0:], src)
	binary.BigEndian.PutUint16(b[2:], dst)
	b[12] = 1                                 // INIT
	binary.BigEndian.PutUint16(b[14:], 20)    // chunk length
	binary.BigEndian.PutUint32(b[16:], 1)     // initiate tag
	binary.BigEndian.PutUint32(b[20:], 1<<16) // a_rwnd
	binary.BigEndian.PutUint16(b[24:], 1)     // outbound streams
	binary.BigEndian.PutUint16(b[26:], 1)     // inbound streams
	binary.BigEndian.PutUint32(b[28:], 1)     // initial TSN
	return b
}
