package hostport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// TestProbe binds real sockets inside a throwaway namespace and probes
// from a thread in it, as a plugin does in the node's namespace.
func TestProbe(t *testing.T) {
	nettest.RequireRoot(t)
	n := nettest.NewNS(t)
	nettest.Listen(t, n, "tcp4", "127.0.0.1:18080", "x")
	nettest.Listen(t, n, "udp", "[::]:18053", "x")
	nettest.Listen(t, n, "tcp6", "[::1]:18443", "x")
	self := fmt.Sprintf("(pid %d)", os.Getpid())
	cases := []struct {
		spec string
		busy bool
	}{
		{"tcp/:18080", true},           // every address covers 127.0.0.1
		{"tcp/127.0.0.1:18080", true},  // exact
		{"tcp/0.0.0.0:18080", true},    // v4 wildcard
		{"tcp/192.0.2.7:18080", false}, // another (non-local) address: free
		{"tcp/[::]:18080", false},      // the v6 side is free
		{"udp/:18080", false},          // other protocol
		{"udp/:18053", true},           // a dual-stack UDP socket
		{"udp/192.0.2.7:18053", true},  // ... covers v4 addresses
		{"tcp/:18053", false},          // other protocol
		{"tcp/[::1]:18443", true},      // v6 exact
		{"tcp/127.0.0.1:18443", false}, // other family
		{"tcp/:18443", true},           // every address
		{"sctp/:18080", false},         // no SCTP listener (or no SCTP)
		{"tcp/[2001:db8::5]:18999", false},
	}
	for _, tc := range cases {
		var err error
		n.MustDo(t, func() error { err = Probe(ports(t, tc.spec)[0]); return nil })
		switch {
		case tc.busy && !errors.Is(err, ErrPortInUse):
			t.Errorf("%s: err = %v, want ErrPortInUse", tc.spec, err)
		case tc.busy && !strings.Contains(err.Error(), self):
			t.Errorf("%s: error %q does not name this process %s", tc.spec, err, self)
		case !tc.busy && err != nil:
			t.Errorf("%s: %v, want free", tc.spec, err)
		}
	}
}

// TestReserveProbes refuses a port a process listens on and writes nothing.
func TestReserveProbes(t *testing.T) {
	nettest.RequireRoot(t)
	s, root := openStore(t)
	n := nettest.NewNS(t)
	nettest.Listen(t, n, "tcp", "[::]:18081", "x")
	k := netconf.Key{Network: "n", ContainerID: "c", IfName: "eth0"}
	var err error
	n.MustDo(t, func() error {
		err = Reserve(context.Background(), s, k, ports(t, "udp/:18081", "tcp/:18081"), true)
		return nil
	})
	if !errors.Is(err, ErrPortInUse) || !strings.Contains(err.Error(), "tcp port 18081") {
		t.Fatalf("err = %v, want ErrPortInUse for tcp 18081", err)
	}
	if f := files(t, root); len(f) != 0 {
		t.Errorf("refused Reserve left %v", f)
	}
	n.MustDo(t, func() error { return Reserve(context.Background(), s, k, ports(t, "udp/:18081"), true) })
}

// TestOwnerForked: when a child also holds the socket (a worker, or a
// fork before its exec), Owner names the parent, whichever pid is lower.
func TestOwnerForked(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	n := nettest.NewNS(t)
	var ln *net.TCPListener
	n.MustDo(t, func() (err error) {
		ln, err = net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 18099})
		return err
	})
	t.Cleanup(func() { ln.Close() })
	f, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command("sleep", "30")
	child.ExtraFiles = []*os.File{f} // the child holds the listener too
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(func() { child.Process.Kill(); child.Wait() })
	self, kid := os.Getpid(), child.Process.Pid
	for _, pids := range [][]int{{kid, self}, {self, kid}} {
		if got := eldest(pids); got != self {
			t.Errorf("eldest(%v) = %d, want the parent %d", pids, got, self)
		}
	}
	var who string
	n.MustDo(t, func() error { who = Owner("tcp", 18099); return nil })
	if want := fmt.Sprintf("(pid %d)", self); !strings.Contains(who, want) {
		t.Errorf("Owner = %q, want the parent %s, not the child %d", who, want, kid)
	}
	// The kernel's comm is the executable's name, cut to 15 bytes.
	if name := filepath.Base(os.Args[0]); !strings.HasPrefix(who, name[:min(len(name), 15)]+" ") {
		t.Errorf("Owner = %q, want it to start with the process name %q", who, name)
	}
}
