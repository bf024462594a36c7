//go:build soak

package soak

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netdrivers/netdrivers/pkg/nettest"
)

var (
	flagOps     = flag.Int("ops", 2000, "operations to run (ADD, CHECK, DEL, GC, STATUS, PING)")
	flagWorkers = flag.Int("workers", 16, "concurrent workers")
	flagMaxLive = flag.Int("maxlive", 48, "live attachments at most (more ADDs become DELs)")
	flagSeed    = flag.Uint64("seed", 0, "random seed (0: from the clock); the interleaving varies anyway")
)

// nsPrefix starts the names of the soak's container namespaces, followed
// by the PID: what a killed run left is removed by the next one.
const nsPrefix = "ndsoak-"

// TestSoak runs the soak: warm-up, workers, a kernel scan every half
// second, teardown of what is left, the leak check, the report.
func TestSoak(t *testing.T) {
	nettest.RequireRoot(t)
	removeStale(t)
	n := newNode(t)
	for _, net := range n.nets {
		warm(t, n, net)
	}
	base := n.baseline(t)
	seed := *flagSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	s := &soak{n: n, reg: newRegistry(n.nets), st: newStats(), maxLive: *flagMaxLive}
	s.left.Store(int64(*flagOps))
	fmt.Printf("soak: %d operations, %d workers, at most %d live, seed %d\n", *flagOps, *flagWorkers, *flagMaxLive, seed)

	var dups []string
	stop := make(chan struct{})
	scanned := make(chan struct{})
	go func() { // the kernel scan, while the workers run
		defer close(scanned)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				dups = append(dups, s.reg.scan(n)...)
			}
		}
	}()
	var wg sync.WaitGroup
	for w := range *flagWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for s.left.Add(-1) >= 0 {
				s.step(rng)
				s.progress()
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-scanned
	dups = append(dups, s.reg.scan(n)...)
	dups = append(dups, s.reg.dups...)
	s.teardown()
	paths := append([]string(nil), s.reg.paths...)
	sort.Strings(paths)
	leaks := n.leaks(t, base, paths)
	s.st.report(os.Stdout, *flagOps, *flagWorkers, dups, leaks)
	if u := s.st.unexpected(); u+len(dups)+len(leaks) > 0 {
		t.Errorf("soak: %d unexpected errors, %d duplicate addresses, %d leaks", u, len(dups), len(leaks))
	}
}

// progress prints a line at every tenth of the run.
func (s *soak) progress() {
	done := int64(*flagOps) - s.left.Load()
	if step := int64(*flagOps) / 10; step > 0 && done%step == 0 && done > 0 {
		fmt.Fprintf(os.Stderr, "soak: %d/%d operations, %d live, %.0f s\n", done, *flagOps, s.reg.count(), time.Since(s.st.start).Seconds())
	}
}

// warm attaches and detaches one container on net, so that what stays
// after a network's last attachment is in the baseline.
func warm(t *testing.T, n *node, net *network) {
	t.Helper()
	if net.plugin == "joinns" || net.plugin == "none" {
		return
	}
	ns := nettest.NewNS(t)
	rt := nettest.Runtime(t, ns, "eth0")
	n.cni.MustAdd(t, net.list, rt)
	n.cni.MustDel(t, net.list, rt)
}

// teardown ends every attachment still live, joiners first, as a runtime
// stopping its pods does.
func (s *soak) teardown() {
	s.reg.mu.Lock()
	live := append([]*att(nil), s.reg.live...)
	s.reg.mu.Unlock()
	sort.SliceStable(live, func(i, j int) bool { return live[i].target != nil && live[j].target == nil })
	for _, a := range live {
		s.reg.unregister(a)
		s.delAtt(a, "DEL")
	}
}

// removeStale removes container namespaces a killed soak left behind
// (names with the PID of a process that is gone).
func removeStale(t *testing.T) {
	entries, _ := os.ReadDir(nettest.NSDir)
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), nsPrefix)
		if !ok {
			continue
		}
		pid, _, _ := strings.Cut(rest, "-")
		if p, err := strconv.Atoi(pid); err == nil && p != os.Getpid() {
			if _, err := os.Stat(filepath.Join("/proc", pid)); os.IsNotExist(err) {
				if err := (&nettest.NS{Name: e.Name()}).Remove(); err != nil {
					t.Logf("remove stale %s: %v", e.Name(), err)
				}
			}
		}
	}
}
