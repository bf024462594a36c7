package dnat

import (
	"fmt"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/reexec"
)

// One detached flusher per host namespace takes the UDP flush requests of
// every plugin call there and walks the conntrack hash once for all the
// ports that arrived within flushBatch, instead of one copy of the plugin
// and one walk per call. Plugins find it by an abstract unix socket, whose
// name belongs to the network namespace; it exits once idle.
const (
	flusherAddr = "@netdrivers-udp-flush"
	flushBatch  = 100 * time.Millisecond
	flusherIdle = time.Second
)

// requestFlush hands f to the flusher of the calling thread's namespace.
// Success means the flusher acknowledged it: it walks for these ports no
// sooner than after from now, even if it is about to exit.
func requestFlush(f udpFlush, after time.Duration) error {
	fd, err := reexec.Dial(flusherAddr)
	if err != nil {
		return fmt.Errorf("udp flusher: %w", err)
	}
	defer unix.Close(fd)
	if err := reexec.Send(fd, []byte(f.encode(after)), nil); err != nil {
		return err
	}
	if err := reexec.Ack(fd); err != nil {
		return fmt.Errorf("udp flusher: %w", err)
	}
	return nil
}

// listenFlusher claims the namespace's flusher address (EADDRINUSE when
// another flusher holds it).
func listenFlusher() (*net.UnixListener, error) {
	return net.ListenUnix("unixpacket", &net.UnixAddr{Name: flusherAddr, Net: "unixpacket"})
}

// flushJob is one request: its ports may be walked for from notBefore
// (DEL's retirement tick), and must be by notBefore + batch.
type flushJob struct {
	notBefore time.Time
	f         udpFlush
}

// flushServer batches requests and walks for the due ones.
type flushServer struct {
	walk         func(udpFlush) error
	batch, idle  time.Duration
	mu           sync.Mutex
	jobs         []flushJob
	last         time.Time // the latest request
	wake         chan struct{}
	acceptClosed chan struct{}
}

func newFlushServer(walk func(udpFlush) error, batch, idle time.Duration) *flushServer {
	return &flushServer{walk: walk, batch: batch, idle: idle, wake: make(chan struct{}, 1), acceptClosed: make(chan struct{})}
}

func (s *flushServer) add(f udpFlush, after time.Duration) {
	now := time.Now()
	s.mu.Lock()
	s.jobs = append(s.jobs, flushJob{now.Add(after), f})
	s.last = now
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// serve answers on ln and walks until idle, then closes ln and walks for
// what it acknowledged before the close. A caller that finds ln closed
// starts a flusher of its own.
func (s *flushServer) serve(ln *net.UnixListener) {
	go s.accept(ln)
serving:
	for {
		ready, next, idle := s.take(false)
		if len(ready.v4)+len(ready.v6) > 0 {
			s.walk(ready) // errors have nobody to go to: the plugin has answered
			continue
		}
		if idle {
			break
		}
		t := time.NewTimer(time.Until(next))
		select {
		case <-s.wake:
		case <-t.C:
		case <-s.acceptClosed:
			t.Stop()
			break serving
		}
		t.Stop()
	}
	ln.Close()
	<-s.acceptClosed
	for {
		ready, next, _ := s.take(true)
		if len(ready.v4)+len(ready.v6) > 0 {
			s.walk(ready)
		}
		if next.IsZero() {
			return
		}
		time.Sleep(time.Until(next))
	}
}

// take returns the ports to walk for now, and when to look again (zero
// if no job is left), and whether the server has been idle long enough
// to stop. A walk is due when a job has waited a batch; it takes every
// job that may be walked for by then, so the calls of a batch share it.
// Draining, it walks for every job as soon as it may.
func (s *flushServer) take(draining bool) (ready udpFlush, next time.Time, idle bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	due := func(j flushJob) time.Time {
		if draining {
			return j.notBefore
		}
		return j.notBefore.Add(s.batch)
	}
	walk := false
	for _, j := range s.jobs {
		walk = walk || !due(j).After(now)
	}
	kept := s.jobs[:0]
	for _, j := range s.jobs {
		if walk && !j.notBefore.After(now) {
			ready.merge(j.f)
			continue
		}
		kept = append(kept, j)
		if d := due(j); next.IsZero() || d.Before(next) {
			next = d
		}
	}
	s.jobs = kept
	if len(kept) == 0 && !draining {
		next = s.last.Add(s.idle)
		idle = !next.After(now)
	}
	return ready, next, idle
}

func (s *flushServer) accept(ln *net.UnixListener) {
	defer close(s.acceptClosed)
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			ln.Close() // callers then start their own flusher instead of waiting on a backlog
			return
		}
		s.handle(c)
	}
}

// handle reads one request from a root caller and acknowledges it.
func (s *flushServer) handle(c *net.UnixConn) {
	defer c.Close()
	if !reexec.Admit(c) {
		return
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		return
	}
	f, after, err := decodeFlush(string(buf[:n]))
	if err != nil {
		return
	}
	s.add(f, after)
	c.Write([]byte{reexec.AckByte})
}
