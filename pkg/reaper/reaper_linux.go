// Package reaper deletes links without making the plugin wait for the
// kernel to free them. A deleted link leaves its namespace at once: its
// name, addresses and bridge port go, its veth peer with it, and the
// kernel sends RTM_DELLINK. The delete call itself then waits in
// rcu_barrier for the kernel to release the device, about 16 ms here and
// most of a DEL. So a detached copy of the plugin, one per node
// namespace, issues the deletes and does the waiting; the plugin goes on
// as soon as the link's RTM_DELLINK arrives.
package reaper

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/reexec"
)

const (
	addr   = "@netdrivers-link-reaper"
	helper = "link-reaper"
	idle   = time.Second
	// leave bounds the wait for a handed-over link to leave its
	// namespace; then the caller deletes it itself.
	leave = 2 * time.Second
	// startWait bounds the wait for a reaper just started to listen.
	startWait = time.Second
)

func init() { reexec.Register(helper, func() int { serve(); return 0 }) }

// DelLink deletes the link name of type typ in ns (a veth's peer goes
// with it) and returns once ns no longer has it. A link that is gone is
// success; one of another type is left alone (netns.ErrWrongType). The
// node's reaper deletes it when the calling thread is in host (the
// plugin's own namespace) and the process is a plugin; otherwise, or if
// the reaper fails, the link is deleted here.
// Equivalent to: ip -n NS link del NAME type TYP
func DelLink(host, ns *netns.Handle, name, typ string) error {
	if !host.IsSelf() || !reexec.Enabled() {
		return ns.DelLink(name, typ)
	}
	return del(ns, name, typ, func() error { return reexec.Start(helper) })
}

// del hands the link to the reaper of the calling thread's namespace,
// starting one with start when none answers.
func del(ns *netns.Handle, name, typ string, start func() error) error {
	w, err := watch(ns)
	if err != nil {
		return ns.DelLink(name, typ)
	}
	defer unix.Close(w)
	// Looked up after subscribing, so that whoever deletes it, its
	// RTM_DELLINK is seen.
	l, err := ns.LinkOfType(name, typ)
	if err != nil || l == nil {
		return err
	}
	idx := l.Attrs().Index
	if hand(ns, job{idx: idx, name: name, typ: typ}, start) == nil && waitDel(w, idx, leave) == nil {
		return nil
	}
	return ns.DelLink(name, typ)
}

// job is one link to delete, in the namespace whose fd comes with it. The
// reaper checks the index still names name, of type typ.
type job struct {
	idx       int
	name, typ string
}

func (j job) encode() string { return fmt.Sprintf("%d %s %s", j.idx, j.name, j.typ) }

func decode(s string) (job, error) {
	f := strings.Fields(s)
	if len(f) != 3 {
		return job{}, fmt.Errorf("reap request %q", s)
	}
	idx, err := strconv.Atoi(f[0])
	if err != nil || idx <= 0 {
		return job{}, fmt.Errorf("reap request %q: index", s)
	}
	return job{idx: idx, name: f[1], typ: f[2]}, nil
}

// hand gives j, with ns's fd, to the reaper and waits for its ack.
func hand(ns *netns.Handle, j job, start func() error) error {
	fd, err := reexec.Dial(addr)
	if err != nil {
		if err := start(); err != nil {
			return err
		}
		fd, err = dialStarted()
		if err != nil {
			return err
		}
	}
	defer unix.Close(fd)
	if err := reexec.Send(fd, []byte(j.encode()), unix.UnixRights(ns.Fd())); err != nil {
		return err
	}
	return reexec.Ack(fd)
}

// dialStarted connects to a reaper that is starting up.
func dialStarted() (int, error) {
	deadline := time.Now().Add(startWait)
	for {
		fd, err := reexec.Dial(addr)
		if err == nil || !errors.Is(err, unix.ECONNREFUSED) || time.Now().After(deadline) {
			return fd, err
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// watch opens a socket in ns that receives its link notifications.
func watch(ns *netns.Handle) (fd int, err error) {
	err = ns.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_LINK}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// waitDel waits on w for the RTM_DELLINK of link idx. (A bridge also
// sends one, of family AF_BRIDGE, when the link merely leaves it.)
func waitDel(w, idx int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 32<<10)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return unix.ETIMEDOUT
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		if err := unix.SetsockoptTimeval(w, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		n, _, err := unix.Recvfrom(w, buf, 0)
		if errors.Is(err, unix.EINTR) {
			continue // not eintr.Retry: the timeout must shrink
		}
		if err != nil {
			return err // ENOBUFS: notifications were lost; the caller checks for itself
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Type == unix.RTM_DELLINK && len(m.Data) >= unix.SizeofIfInfomsg &&
				m.Data[0] == unix.AF_UNSPEC && int(int32(binary.NativeEndian.Uint32(m.Data[4:8]))) == idx {
				return nil
			}
		}
	}
}

// serve is the detached reaper: it takes deletes until idle, then waits
// for the ones under way. Another reaper holding the address ends it.
func serve() {
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: addr, Net: "unixpacket"})
	if err != nil {
		return
	}
	run(ln, idle, delLink)
}

// run accepts on ln until nobody called for idle, runs each job with do
// (which owns the namespace fd), and returns when all are done. A caller
// whose connection the close drops gets no ack and deletes for itself.
func run(ln *net.UnixListener, idle time.Duration, do func(nsFd int, j job)) {
	var wg sync.WaitGroup
	for {
		if ln.SetDeadline(time.Now().Add(idle)) != nil {
			break
		}
		c, err := ln.AcceptUnix()
		if err != nil {
			break
		}
		if nsFd, j, ok := read(c); ok {
			wg.Add(1)
			go func() {
				defer wg.Done()
				do(nsFd, j)
			}()
			c.Write([]byte{reexec.AckByte})
		}
		c.Close()
	}
	ln.Close()
	wg.Wait()
}

// read takes one request, and the namespace fd it carries, from a root
// caller: anyone else could otherwise have links deleted.
func read(c *net.UnixConn) (int, job, bool) {
	if !reexec.Admit(c) {
		return -1, job{}, false
	}
	buf, oob := make([]byte, 512), make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return -1, job{}, false
	}
	var fds []int
	if cms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil && len(cms) == 1 {
		fds, _ = unix.ParseUnixRights(&cms[0])
	}
	j, err := decode(string(buf[:n]))
	if err != nil || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return -1, job{}, false
	}
	return fds[0], j, true
}

// delLink deletes j in the namespace nsFd refers to, if its index still
// names the link the caller saw, and closes nsFd.
func delLink(nsFd int, j job) {
	defer unix.Close(nsFd)
	h, err := netlinksafe.NewHandleAt(vnetns.NsHandle(nsFd), unix.NETLINK_ROUTE)
	if err != nil {
		return
	}
	defer h.Close()
	l, err := h.LinkByIndex(j.idx)
	if err != nil || l.Attrs().Name != j.name || l.Type() != j.typ {
		return
	}
	h.LinkDel(l) // errors have nobody to go to: the caller deletes after its timeout
}
