package reaper

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/nettest"
	"github.com/netdrivers/netdrivers/pkg/reexec"
)

// jobLog records what a reaper was handed and whether the link was still
// there for it to delete.
type jobLog struct {
	mu    sync.Mutex
	jobs  []job
	found []bool
}

func (l *jobLog) do(nsFd int, j job) {
	h, err := netlinksafe.NewHandleAt(vnetns.NsHandle(nsFd), unix.NETLINK_ROUTE)
	found := false
	if err == nil {
		_, lerr := h.LinkByIndex(j.idx)
		found = lerr == nil
		h.Close()
	}
	l.mu.Lock()
	l.jobs, l.found = append(l.jobs, j), append(l.found, found)
	l.mu.Unlock()
	do(nsFd, j)
}

func (l *jobLog) get() ([]job, []bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]job(nil), l.jobs...), append([]bool(nil), l.found...)
}

// pair makes a veth: host end name in node, peer "eth0" in cont.
func pair(t *testing.T, node, cont *nettest.NS, name string) {
	t.Helper()
	nettest.NewVeth(t, node, name, "", cont, "eth0", "")
}

// newPair is a fresh node and container namespace joined by a veth whose
// node end is prefix and random hex.
func newPair(t *testing.T, prefix string) (node, cont *nettest.NS, name string) {
	t.Helper()
	node, cont, name = nettest.NewNS(t), nettest.NewNS(t), prefix+nettest.RandHex(8)
	pair(t, node, cont, name)
	return node, cont, name
}

// starter returns a start function that runs a reaper in-process on the
// calling thread's namespace, and a channel closed when it returns.
func starter(t *testing.T, log *jobLog, idle time.Duration) (func() error, chan struct{}) {
	done := make(chan struct{})
	return func() error {
		ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: addr, Net: "unixpacket"})
		if err != nil {
			return err
		}
		go func() {
			defer close(done)
			run(ln, idle, log.do)
		}()
		return nil
	}, done
}

// TestReaperDeletes: the first call starts a reaper, later ones reuse it;
// each returns with the pair gone from both namespaces, deleted by the
// reaper, which exits once idle.
func TestReaperDeletes(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	node := nettest.NewNS(t)
	conts := []*nettest.NS{nettest.NewNS(t), nettest.NewNS(t)}
	names := []string{"rpa" + nettest.RandHex(8), "rpb" + nettest.RandHex(8)}
	for i := range names {
		pair(t, node, conts[i], names[i])
	}
	log := &jobLog{}
	start, done := starter(t, log, 300*time.Millisecond)
	starts := 0
	counted := func() error { starts++; return start() }
	node.MustDo(t, func() error {
		for _, name := range names {
			if err := del(node.Handle(), name, "veth", counted); err != nil {
				return err
			}
		}
		return nil
	})
	for i, name := range names {
		if nettest.HasLink(t, node, name) || nettest.HasLink(t, conts[i], "eth0") {
			t.Errorf("%s or its peer is still there after del", name)
		}
	}
	if starts != 1 {
		t.Errorf("reapers started: %d, want 1", starts)
	}
	jobs, found := log.get()
	if len(jobs) != 2 || jobs[0].name != names[0] || jobs[1].name != names[1] || !found[0] || !found[1] {
		t.Errorf("reaper jobs %+v (link found %v), want both links, found", jobs, found)
	}
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Error("the reaper did not exit once idle")
	}
	// A link that is not there, or of another type, is not handed over.
	node.MustDo(t, func() error {
		if err := del(node.Handle(), names[0], "veth", counted); err != nil {
			t.Errorf("del of a missing link: %v", err)
		}
		if err := del(node.Handle(), "lo", "veth", counted); !errors.Is(err, netns.ErrWrongType) {
			t.Errorf("del of lo as a veth: %v, want ErrWrongType", err)
		}
		return nil
	})
	if starts != 1 || !nettest.HasLink(t, node, "lo") {
		t.Errorf("reapers started: %d, want still 1; lo there: %v", starts, nettest.HasLink(t, node, "lo"))
	}
}

// TestReaperFallback: with no reaper to be had, the caller deletes the
// link itself.
func TestReaperFallback(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	node, cont, name := newPair(t, "rpf")
	node.MustDo(t, func() error {
		return del(node.Handle(), name, "veth", func() error { return errors.New("no reaper") })
	})
	if nettest.HasLink(t, node, name) || nettest.HasLink(t, cont, "eth0") {
		t.Error("the pair survived a del without a reaper")
	}
}

// TestReaperChecksLink: a job whose index now names another link, or a
// link of another type, deletes nothing.
func TestReaperChecksLink(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	node, _, name := newPair(t, "rpc")
	idx := nettest.Link(t, node, name).Attrs().Index
	for _, j := range []job{{idx: idx, name: "other0", typ: "veth"}, {idx: idx, name: name, typ: "macvlan"}} {
		fd, err := unix.Open(node.Path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		delLink(fd, j)
		if !nettest.HasLink(t, node, name) {
			t.Fatalf("job %+v deleted %s", j, name)
		}
	}
	if _, err := decode("0 x veth"); err == nil {
		t.Error("decode took index 0")
	}
}

// TestReaperNotRoot: a caller that is not root gets no ack and no delete.
func TestReaperNotRoot(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	node, _, name := newPair(t, "rpn")
	log := &jobLog{}
	start, done := starter(t, log, 200*time.Millisecond)
	idx := nettest.Link(t, node, name).Attrs().Index
	node.MustDo(t, start)
	var fd int
	if err := node.DoAs(65534, func() (err error) {
		if fd, err = unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		return unix.Connect(fd, &unix.SockaddrUnix{Name: addr})
	}); err != nil {
		t.Fatal(err)
	}
	// The reaper may hang up before the request is sent (EPIPE): also a refusal.
	unix.Sendmsg(fd, []byte(job{idx: idx, name: name, typ: "veth"}.encode()), unix.UnixRights(node.Handle().Fd()), nil, 0)
	var ack [1]byte
	if n, _ := unix.Read(fd, ack[:]); n > 0 {
		t.Errorf("a caller of uid 65534 got an ack %q", ack[:n])
	}
	unix.Close(fd)
	<-done
	if jobs, _ := log.get(); len(jobs) != 0 || !nettest.HasLink(t, node, name) {
		t.Errorf("jobs %+v from a caller of uid 65534; link there: %v", jobs, nettest.HasLink(t, node, name))
	}
}

// TestReaperAnnounces: with a reaper running, announce hands the link to
// it, starting none; the reaper announces with the MAC the link has (not
// the caller's) and sets ndisc_notify. Without one, the announcement is
// sent in the call, which starts a reaper only when that took slow.
func TestReaperAnnounces(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	node := nettest.NewNS(t)
	cont, out := nettest.NewNeighbours(t)
	link := nettest.Link(t, cont, "eth0")
	mac := link.Attrs().HardwareAddr.String()
	addrs := []netip.Addr{netip.MustParseAddr("198.51.100.5"), netip.MustParseAddr("2001:db8:5::5")}
	stale, _ := net.ParseMAC("02:00:00:00:00:99")
	ol := nettest.Link(t, out, "eth0")
	// setStale has out map addrs to another MAC; learned waits until out
	// maps them to the link's.
	setStale := func() {
		for _, a := range addrs {
			n := &netlink.Neigh{LinkIndex: ol.Attrs().Index, State: netlink.NUD_REACHABLE, IP: a.AsSlice(), HardwareAddr: stale}
			if err := out.NL(t).NeighSet(n); err != nil {
				t.Fatal(err)
			}
		}
	}
	learned := func(what string) {
		t.Helper()
		nettest.Eventually(t, 2*time.Second, what, func() error {
			ns, err := out.NL(t).NeighList(ol.Attrs().Index, netlink.FAMILY_ALL)
			if err != nil {
				return err
			}
			for _, a := range addrs {
				if !slices.ContainsFunc(ns, func(n netlink.Neigh) bool {
					return n.IP.Equal(a.AsSlice()) && n.HardwareAddr.String() == mac
				}) {
					return fmt.Errorf("out does not map %s to %s: %v", a, mac, ns)
				}
			}
			return nil
		})
	}
	j := job{idx: link.Attrs().Index, name: "eth0", announce: addrs}
	if d, err := decode(j.encode()); err != nil || !slices.Equal(d.announce, addrs) || d.idx != j.idx || d.name != "eth0" {
		t.Fatalf("decode(encode(%+v)) = %+v, %v", j, d, err)
	}

	log := &jobLog{}
	start, done := starter(t, log, 300*time.Millisecond)
	node.MustDo(t, start)
	starts := 0
	counted := func() error { starts++; return nil }
	setStale()
	node.MustDo(t, func() error { return announce(cont.Handle(), j, stale, time.Hour, counted) })
	learned("announced by the reaper")
	if got := cont.ReadSysctl(t, "net/ipv6/conf/eth0/ndisc_notify"); got != "1" {
		t.Errorf("ndisc_notify = %s after the reaper's announcement, want 1", got)
	}
	if jobs, _ := log.get(); starts != 0 || len(jobs) != 1 || !slices.Equal(jobs[0].announce, addrs) {
		t.Errorf("with a reaper running: %d started, jobs %+v; want none started, the one announcement", starts, jobs)
	}
	<-done

	for _, slow := range []time.Duration{time.Hour, 0} {
		setStale()
		node.MustDo(t, func() error { return announce(cont.Handle(), j, link.Attrs().HardwareAddr, slow, counted) })
		learned(fmt.Sprintf("announced in the call (slow %v)", slow))
		if want := map[time.Duration]int{time.Hour: 0, 0: 1}[slow]; starts != want {
			t.Errorf("slow %v: %d reapers started, want %d", slow, starts, want)
		}
	}
	if jobs, _ := log.get(); len(jobs) != 1 {
		t.Errorf("jobs %+v after the reaper exited", jobs)
	}

	// A reaper that refuses (an older binary's) or does not answer: the
	// call announces itself and starts no other, however slow.
	ln := listen(t, node)
	go func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	setStale()
	node.MustDo(t, func() error { return announce(cont.Handle(), j, link.Attrs().HardwareAddr, 0, counted) })
	learned("announced in the call, beside a refusing reaper")
	if starts != 1 {
		t.Errorf("%d reapers started beside a refusing one, want still 1", starts)
	}
}

// listen binds the reaper's address in node for the test's own server.
func listen(t *testing.T, node *nettest.NS) *net.UnixListener {
	t.Helper()
	var ln *net.UnixListener
	node.MustDo(t, func() (err error) {
		ln, err = net.ListenUnix("unixpacket", &net.UnixAddr{Name: addr, Net: "unixpacket"})
		return err
	})
	t.Cleanup(func() { ln.Close() })
	return ln
}

// TestReaperAnnounceChecks: a job whose index names another link changes
// nothing there, and a request cut by the reaper's buffer is refused.
func TestReaperAnnounceChecks(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	node, cont, _ := newPair(t, "rpk")
	idx := nettest.Link(t, cont, "eth0").Attrs().Index
	fd, err := unix.Open(cont.Path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	announceLink(fd, job{idx: idx, name: "other0", announce: []netip.Addr{netip.MustParseAddr("198.51.100.5")}})
	if got := cont.ReadSysctl(t, "net/ipv4/conf/eth0/arp_notify"); got != "0" {
		t.Errorf("a job naming other0 set eth0's arp_notify to %s", got)
	}

	// Cut at the reaper's 4096 bytes right before an address, so that
	// what it reads still parses.
	j := job{idx: idx, name: "eth0"}
	for len(j.encode()) < 4096-60 {
		j.announce = append(j.announce, netip.MustParseAddr(fmt.Sprintf("2001:db8:aaaa:bbbb:cccc:dddd:eeee:%x", 0x1000+len(j.announce))))
	}
	for r := 4096 - len(j.encode()); r > 0; r = 4096 - len(j.encode()) {
		j.announce = append(j.announce, ipv4OfLen(min(r-1, 15)))
	}
	j.announce = append(j.announce, netip.MustParseAddr("2001:db8::1"))
	many := j.announce
	log := &jobLog{}
	start, done := starter(t, log, 200*time.Millisecond)
	node.MustDo(t, start)
	node.MustDo(t, func() error {
		fd, err := reexec.Dial(addr)
		if err != nil {
			return err
		}
		if err := send(fd, cont.Handle(), job{idx: idx, name: "eth0", announce: many}); err == nil {
			t.Errorf("a %d-byte request was acknowledged", len(job{idx: idx, name: "eth0", announce: many}.encode()))
		}
		return nil
	})
	<-done
	if jobs, _ := log.get(); len(jobs) != 0 {
		t.Errorf("jobs %+v from a cut request", jobs)
	}
}

// TestReaperAnnouncesBesideMACChange: a chained plugin (tuning "mac") may
// set the link's MAC while the reaper announces, after ADD answered. The
// reaper must neither set the MAC back nor leave a neighbour with the old
// one.
func TestReaperAnnouncesBesideMACChange(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	cont, out := nettest.NewNeighbours(t)
	out.Sysctl(t, "net/ipv6/conf/eth0/accept_untracked_na", "1")
	out.Sysctl(t, "net/ipv6/conf/eth0/forwarding", "1")
	link, ol := nettest.Link(t, cont, "eth0"), nettest.Link(t, out, "eth0")
	addrs := []netip.Addr{netip.MustParseAddr("198.51.100.5"), netip.MustParseAddr("2001:db8:5::5")}
	j := job{idx: link.Attrs().Index, name: "eth0", announce: addrs}
	macs := make([]net.HardwareAddr, 3)
	for i := range macs {
		macs[i] = net.HardwareAddr{2, 0, 0, 0, 0, byte(0x90 + i)}
	}
	nl, onl := cont.NL(t), out.NL(t)
	const n = 40
	var reverted, stale int
	for i := range n {
		// A fresh link: old MAC, no notifications; out holds another MAC.
		cont.Sysctl(t, "net/ipv6/conf/eth0/ndisc_notify", "0")
		cont.Sysctl(t, "net/ipv4/conf/eth0/arp_notify", "0")
		if err := nl.LinkSetHardwareAddr(link, macs[1]); err != nil {
			t.Fatal(err)
		}
		for _, a := range addrs {
			n := &netlink.Neigh{LinkIndex: ol.Attrs().Index, State: netlink.NUD_REACHABLE, IP: a.AsSlice(), HardwareAddr: macs[0]}
			if err := onl.NeighSet(n); err != nil {
				t.Fatal(err)
			}
		}
		fd, err := unix.Open(cont.Path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { defer close(done); announceLink(fd, j) }()
		time.Sleep(time.Duration(i*15) * time.Microsecond) // across the announcement
		if err := nl.LinkSetHardwareAddr(link, macs[2]); err != nil {
			t.Fatal(err)
		}
		<-done
		if l := nettest.Link(t, cont, "eth0"); l.Attrs().HardwareAddr.String() != macs[2].String() {
			reverted++
			continue
		}
		time.Sleep(20 * time.Millisecond)
		ns, err := onl.NeighList(ol.Attrs().Index, netlink.FAMILY_ALL)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range addrs {
			if !slices.ContainsFunc(ns, func(e netlink.Neigh) bool {
				return e.IP.Equal(a.AsSlice()) && e.HardwareAddr.String() == macs[2].String()
			}) {
				stale++
				t.Logf("run %d: out does not map %s to %s: %v", i, a, macs[2], ns)
			}
		}
	}
	if reverted > 0 || stale > 0 {
		t.Errorf("of %d runs, %d set the MAC back; %d addresses left mapped to another MAC", n, reverted, stale)
	}
}

// ipv4OfLen is an IPv4 address whose text has n (7 to 15) characters.
func ipv4OfLen(n int) netip.Addr {
	octets := []string{"1", "1", "1", "1"}
	for i := 0; len(strings.Join(octets, ".")) < n; i = (i + 1) % 4 {
		octets[i] += "1"
	}
	return netip.MustParseAddr(strings.Join(octets, "."))
}

// threadNice is the nice value of the calling thread, or -100 after
// reporting an error (Errorf: callers run on goroutines of their own).
func threadNice(t *testing.T) int {
	prio, err := unix.Getpriority(unix.PRIO_PROCESS, 0) // the thread's, 20 - nice
	if err != nil {
		t.Errorf("getpriority: %v", err)
		return -100
	}
	return 20 - prio
}

// An announcement runs niced on a thread that dies with it: the reaper's
// other threads (deletes, accepts) keep their priority.
func TestReaperAnnouncesNiced(t *testing.T) {
	runtime.LockOSThread()
	base := threadNice(t) // the test may itself run niced
	runtime.UnlockOSThread()
	if base == 19 {
		t.Skip("the test already runs at nice 19")
	}
	in := make(chan int)
	go func() {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			panic(err)
		}
		// Not a namespace: the job ends at once, on the thread it niced.
		announceLink(fd, job{idx: 1, name: "lo", announce: []netip.Addr{netip.MustParseAddr("198.51.100.9")}})
		in <- threadNice(t)
	}()
	if n := <-in; n != 19 {
		t.Fatalf("nice of the announcing thread: %d, want 19", n)
	}
	// No thread that later runs goroutines may have kept it.
	for i := range 50 {
		out := make(chan int)
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			out <- threadNice(t)
		}()
		if n := <-out; n != base {
			t.Fatalf("goroutine %d after the announcement ran on a thread with nice %d, not %d", i, n, base)
		}
		time.Sleep(time.Millisecond)
	}
}
