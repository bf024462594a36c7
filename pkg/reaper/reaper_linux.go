// Package reaper deletes links without making the plugin wait for the
// kernel to free them. A deleted link leaves its namespace at once: its
// name, addresses and bridge port go, its veth peer with it, and the
// kernel sends RTM_DELLINK. The delete call itself then waits in
// rcu_barrier for the kernel to release the device, about 16 ms here and
// most of a DEL. So a detached copy of the plugin, one per node
// namespace, issues the deletes and does the waiting; the plugin goes on
// as soon as the link's RTM_DELLINK arrives. The same copy also sends a
// new link's announcements when they are slow (Announce).
package reaper

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
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
	// slowAnnounce is how long an announcement sent by the plugin itself
	// may take before it starts a reaper for the ADDs that follow.
	slowAnnounce = time.Millisecond
	// announceAck bounds the wait for a reaper's ack of an announcement.
	announceAck = 100 * time.Millisecond
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

// Announce has link in ns announce addrs with its MAC, and keep
// announcing later changes (netns.Handle.AnnounceLink). In bridge mode the
// kernel hands a macvlan's broadcast to every other bridge-mode macvlan of
// the parent inside the sending call, and each container's stack
// processes it there: 3-4 ms with 900 of them, most of the ADD, against
// 0.05 ms with none. So the node's reaper, when one runs, sends it instead,
// moments after the plugin answers (netns.Handle.AnnounceCurrent).
// Otherwise it is sent here, and if that was slow, a reaper is started for
// the ADDs that follow. Announcements are best effort, as in the reference.
func Announce(host, ns *netns.Handle, link netlink.Link, addrs []netip.Addr) error {
	if len(addrs) == 0 {
		return nil
	}
	a := link.Attrs()
	if !host.IsSelf() || !reexec.Enabled() {
		return ns.AnnounceLink(a.Index, a.Name, a.HardwareAddr, addrs)
	}
	j := job{idx: a.Index, name: a.Name, announce: addrs}
	return announce(ns, j, a.HardwareAddr, slowAnnounce, func() error { return reexec.Start(helper) })
}

// announce hands j to a running reaper, or sends it itself and, when that
// took at least slow and no reaper listens (not one that refused or did not
// answer: an older binary's, or a wedged one), starts one with start.
func announce(ns *netns.Handle, j job, mac net.HardwareAddr, slow time.Duration, start func() error) error {
	fd, err := reexec.Dial(addr)
	if err == nil {
		// The reaper answers at once; a busy or wedged one costs the ADD
		// this long, then a (maybe second) announcement of its own.
		tv := unix.NsecToTimeval(announceAck.Nanoseconds())
		if serr := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); serr != nil {
			unix.Close(fd)
		} else if send(fd, ns, j) == nil {
			return nil
		}
	}
	t := time.Now()
	aerr := ns.AnnounceLink(j.idx, j.name, mac, j.announce)
	if errors.Is(err, unix.ECONNREFUSED) && time.Since(t) >= slow {
		start() // if it fails, only later calls lose
	}
	return aerr
}

// job is one link to delete, or to announce, in the namespace whose fd
// comes with it. The reaper checks the index still names name (and for a
// delete, is of type typ).
type job struct {
	idx       int
	name, typ string
	announce  []netip.Addr // set: announce these from the link, delete nothing
}

func (j job) encode() string {
	if j.announce == nil {
		return fmt.Sprintf("%d %s %s", j.idx, j.name, j.typ)
	}
	s := fmt.Sprintf("announce %d %s", j.idx, j.name)
	for _, a := range j.announce {
		s += " " + a.String()
	}
	return s
}

func decode(s string) (job, error) {
	f := strings.Fields(s)
	var j job
	if len(f) > 0 && f[0] == "announce" {
		if len(f) < 4 {
			return job{}, fmt.Errorf("announce request %q", s)
		}
		for _, a := range f[3:] {
			ip, err := netip.ParseAddr(a)
			if err != nil {
				return job{}, fmt.Errorf("announce request %q: %w", s, err)
			}
			j.announce = append(j.announce, ip)
		}
		f = f[1:3]
	} else if len(f) != 3 {
		return job{}, fmt.Errorf("reap request %q", s)
	}
	idx, err := strconv.Atoi(f[0])
	if err != nil || idx <= 0 {
		return job{}, fmt.Errorf("request %q: index", s)
	}
	j.idx, j.name = idx, f[1]
	if j.announce == nil {
		j.typ = f[2]
	}
	return j, nil
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
	return send(fd, ns, j)
}

// send writes j and ns's fd on fd, waits for the ack and closes fd.
func send(fd int, ns *netns.Handle, j job) error {
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

// serve is the detached reaper: it takes deletes and announcements until
// idle, then waits for the ones under way. Another reaper holding the
// address ends it.
func serve() {
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: addr, Net: "unixpacket"})
	if err != nil {
		return
	}
	run(ln, idle, do)
}

// do runs j, an announcement or a delete.
func do(nsFd int, j job) {
	if j.announce != nil {
		announceLink(nsFd, j)
		return
	}
	delLink(nsFd, j)
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
// caller: anyone else could otherwise have links deleted or announced.
func read(c *net.UnixConn) (int, job, bool) {
	if !reexec.Admit(c) {
		return -1, job{}, false
	}
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return -1, job{}, false
	}
	var fds []int
	if cms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil && len(cms) == 1 {
		fds, _ = unix.ParseUnixRights(&cms[0])
	}
	j, err := decode(string(buf[:n]))
	// A cut request is refused: a cut address list could still parse.
	if err != nil || flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 || len(fds) != 1 {
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

// announceLink has j's link in the namespace nsFd refers to announce j's
// addresses, if the index still names the link, and closes nsFd. It runs
// on a goroutine of its own, whose thread it leaves at the lowest priority.
func announceLink(nsFd int, j job) {
	defer unix.Close(nsFd)
	// The broadcast's CPU (every sibling's stack, inside the send) yields
	// to the node's plugin calls, the next ADD's above all: nice 19, per
	// thread on Linux, so deletes and accepts keep theirs. The thread stays
	// locked and ends, niced, with the goroutine.
	runtime.LockOSThread()
	unix.Setpriority(unix.PRIO_PROCESS, 0, 19) // best effort, as the job is
	h, err := netns.Open(fmt.Sprintf("/proc/self/fd/%d", nsFd))
	if err != nil {
		return
	}
	defer h.Close()
	nl, err := h.Netlink()
	if err != nil {
		return
	}
	if l, err := nl.LinkByIndex(j.idx); err != nil || l.Attrs().Name != j.name {
		return
	}
	h.AnnounceCurrent(j.idx, j.name, j.announce) // best effort: nobody to tell
}
