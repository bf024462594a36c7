package dnat

import (
	"errors"
	"net"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// walkLog records a flush server's walks.
type walkLog struct {
	mu    sync.Mutex
	walks []walkAt
}

type walkAt struct {
	at time.Time
	f  udpFlush
}

func (l *walkLog) walk(f udpFlush) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.walks = append(l.walks, walkAt{time.Now(), f})
	return nil
}

func (l *walkLog) get() []walkAt {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]walkAt(nil), l.walks...)
}

var errNoWalk = errors.New("no walk yet")

func sorted(ps []uint16) []uint16 {
	out := append([]uint16(nil), ps...)
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// startFlusher runs a flush server in a fresh namespace (the address is
// per namespace) and returns the namespace, the walk log, a channel
// closed when the server has returned, and its listener.
func startFlusher(t *testing.T, batch, idle time.Duration) (*nettest.NS, *walkLog, chan struct{}, *net.UnixListener) {
	nettest.RequireRoot(t)
	ns := nettest.NewNS(t)
	log := &walkLog{}
	s := newFlushServer(log.walk, batch, idle)
	done := make(chan struct{})
	var ln *net.UnixListener
	ns.MustDo(t, func() (err error) {
		ln, err = listenFlusher()
		if err != nil {
			return err
		}
		s.last = time.Now()
		go func() { s.serve(ln); close(done) }()
		return nil
	})
	t.Cleanup(func() {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("flush server still running 5 s after the test")
		}
	})
	return ns, log, done, ln
}

// TestFlusherBatches: requests that arrive within a batch of the first are
// walked for once, all their ports together, a batch after the first;
// a request with a delay waits for it; an idle server exits and frees the
// address, so the next caller learns there is no flusher.
func TestFlusherBatches(t *testing.T) {
	t.Parallel()
	const batch, idle = 150 * time.Millisecond, 400 * time.Millisecond
	ns, log, done, _ := startFlusher(t, batch, idle)
	start := time.Now()
	reqs := []udpFlush{{v4: []uint16{53}}, {v4: []uint16{53, 5353}}, {v6: []uint16{123}}}
	for _, f := range reqs {
		ns.MustDo(t, func() error { return requestFlush(f, 0) })
		time.Sleep(20 * time.Millisecond) // apart, as calls are, but within the batch
	}
	nettest.Eventually(t, 2*time.Second, "the batch's walk", func() error {
		if len(log.get()) == 0 {
			return errNoWalk
		}
		return nil
	})
	w := log.get()
	if len(w) != 1 {
		t.Fatalf("%d walks for one batch, want 1: %+v", len(w), w)
	}
	if got := w[0].at.Sub(start); got < batch {
		t.Errorf("walked %v after the first request, before the batch (%v) was over", got, batch)
	}
	if v4, v6 := sorted(w[0].f.v4), w[0].f.v6; !reflect.DeepEqual(v4, []uint16{53, 5353}) || !reflect.DeepEqual(v6, []uint16{123}) {
		t.Errorf("walked for v4 %v v6 %v, want v4 [53 5353] v6 [123]", v4, v6)
	}

	// A request with a delay (DEL's retirement) is walked for after it.
	const after = 300 * time.Millisecond
	sent := time.Now()
	ns.MustDo(t, func() error { return requestFlush(udpFlush{v4: []uint16{7000}}, after) })
	nettest.Eventually(t, 2*time.Second, "the delayed walk", func() error {
		if len(log.get()) < 2 {
			return errNoWalk
		}
		return nil
	})
	if w := log.get()[1]; w.at.Sub(sent) < after || !reflect.DeepEqual(w.f.v4, []uint16{7000}) {
		t.Errorf("delayed walk after %v for %v, want ≥ %v for [7000]", w.at.Sub(sent), w.f.v4, after)
	}

	select {
	case <-done:
	case <-time.After(idle + 2*time.Second):
		t.Fatal("the idle server did not exit")
	}
	if err := ns.Do(func() error { return requestFlush(udpFlush{v4: []uint16{1}}, 0) }); err == nil {
		t.Error("a request was acknowledged after the flusher exited")
	}
	if n := len(log.get()); n != 2 {
		t.Errorf("%d walks, want 2", n)
	}
}

// TestFlusherDrains: a flusher whose listener closes still walks for what
// it acknowledged, once due, before it returns.
func TestFlusherDrains(t *testing.T) {
	t.Parallel()
	ns, log, done, ln := startFlusher(t, 50*time.Millisecond, 10*time.Second)
	ns.MustDo(t, func() error { return requestFlush(udpFlush{v4: []uint16{9999}}, 200*time.Millisecond) })
	// Another listener cannot take the address while the flusher holds it.
	if err := ns.Do(func() error {
		ln2, err := listenFlusher()
		if err == nil {
			ln2.Close()
		}
		return err
	}); err == nil {
		t.Fatal("a second flusher bound the address")
	}
	ln.Close()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("the flusher did not return after its listener closed")
	}
	if w := log.get(); len(w) != 1 || !reflect.DeepEqual(w[0].f.v4, []uint16{9999}) {
		t.Errorf("walks %+v, want one for [9999]", w)
	}
}

// TestFlusherNotRoot: a process that is not root and took the flusher's
// abstract name first (anyone can) is not handed the ports: the caller
// learns it has no flusher and flushes some other way.
func TestFlusherNotRoot(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	ns := nettest.NewNS(t)
	var fd int
	err := ns.DoAs(65534, func() (err error) {
		if fd, err = unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		if err = unix.Bind(fd, &unix.SockaddrUnix{Name: flusherAddr}); err != nil {
			return err
		}
		return unix.Listen(fd, 8)
	})
	if err != nil {
		t.Fatal(err)
	}
	stop, stopped := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() {
		// Stop the squatter before its fd number can be reused: still
		// accepting on it, it once took another test's flusher listener.
		close(stop)
		<-stopped
		unix.Close(fd)
	})
	go func() { // a squatter that acknowledges everything
		defer close(stopped)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n, _ := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 50); n < 1 {
				continue
			}
			c, _, err := unix.Accept(fd)
			if err != nil {
				return
			}
			buf := make([]byte, 4096)
			unix.Read(c, buf)
			unix.Write(c, []byte{'k'})
			unix.Close(c)
		}
	}()
	err = ns.Do(func() error { return requestFlush(udpFlush{v4: []uint16{53}}, 0) })
	if err == nil || !strings.Contains(err.Error(), "uid 65534") {
		t.Errorf("request to a flusher held by uid 65534: %v, want refused", err)
	}
}
