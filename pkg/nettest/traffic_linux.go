package nettest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Ping sends one ICMP echo from n to addr and waits for the reply.
func Ping(n *NS, addr string, timeout time.Duration) error {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return err
	}
	return n.Do(func() error {
		network, laddr, typ := "ip4:icmp", "0.0.0.0", icmp.Type(ipv4.ICMPTypeEcho)
		proto := 1
		if ip.Is6() {
			network, laddr, typ, proto = "ip6:ipv6-icmp", "::", ipv6.ICMPTypeEchoRequest, 58
		}
		c, err := icmp.ListenPacket(network, laddr)
		if err != nil {
			return err
		}
		defer c.Close()
		id := int(time.Now().UnixNano() & 0xffff)
		msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: 1, Data: []byte("netdrivers")}}
		b, err := msg.Marshal(nil)
		if err != nil {
			return err
		}
		if _, err := c.WriteTo(b, &net.IPAddr{IP: ip.AsSlice()}); err != nil {
			return fmt.Errorf("ping %s from %s: %w", addr, n.Name, err)
		}
		deadline := time.Now().Add(timeout)
		c.SetReadDeadline(deadline)
		buf := make([]byte, 1500)
		for {
			nr, peer, err := c.ReadFrom(buf)
			if err != nil {
				return fmt.Errorf("ping %s from %s: %w", addr, n.Name, err)
			}
			m, err := icmp.ParseMessage(proto, buf[:nr])
			if err != nil {
				continue
			}
			if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && peer.String() == ip.String() &&
				(m.Type == ipv4.ICMPTypeEchoReply || m.Type == ipv6.ICMPTypeEchoReply) {
				return nil
			}
		}
	})
}

// Listen opens a TCP or UDP server socket inside n that answers every
// connection (or datagram) with reply followed by the peer's address.
// It is closed when t ends.
func Listen(t testing.TB, n *NS, network, addr, reply string) {
	t.Helper()
	var (
		ln net.Listener
		pc net.PacketConn
	)
	n.MustDo(t, func() (err error) {
		if strings.HasPrefix(network, "udp") {
			pc, err = net.ListenPacket(network, addr)
		} else {
			ln, err = net.Listen(network, addr)
		}
		return err
	})
	if ln != nil {
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				fmt.Fprintf(c, "%s %s\n", reply, c.RemoteAddr())
				c.Close()
			}
		}()
		return
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			_, peer, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(fmt.Sprintf("%s %s\n", reply, peer)), peer)
		}
	}()
}

// Dial connects from n to addr (TCP: reads the greeting line; UDP: sends
// a datagram and reads the answer) and returns what the server said.
func Dial(n *NS, network, addr string, timeout time.Duration) (string, error) {
	var c net.Conn
	err := n.Do(func() (err error) {
		d := net.Dialer{Timeout: timeout}
		c, err = d.DialContext(context.Background(), network, addr)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if strings.HasPrefix(network, "udp") {
		if _, err := c.Write([]byte("hello\n")); err != nil {
			return "", err
		}
		buf := make([]byte, 1500)
		nr, err := c.Read(buf)
		if err != nil {
			return "", err
		}
		return strings.TrimSpace(string(buf[:nr])), nil
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return strings.TrimSpace(line), nil
}

// Eventually polls cond every 10 ms until it holds or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %v: %v", what, timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Reachable asserts that a ping from n to addr succeeds within 3 s.
func Reachable(t testing.TB, n *NS, addr string) {
	t.Helper()
	Eventually(t, 3*time.Second, fmt.Sprintf("ping %s from %s", addr, n.Name), func() error {
		return Ping(n, addr, 300*time.Millisecond)
	})
}

// Unreachable asserts that a ping from n to addr gets no answer.
func Unreachable(t testing.TB, n *NS, addr string) {
	t.Helper()
	if err := Ping(n, addr, 500*time.Millisecond); err == nil {
		t.Fatalf("ping %s from %s answered; want no answer", addr, n.Name)
	}
}
