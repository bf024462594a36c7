//go:build soak

package soak

import (
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// expectedCodes are the errors a soak provokes on purpose: small pools run
// out (100) and random published ports collide (101), both on ADD.
var expectedCodes = map[uint]string{100: "address pool exhausted", 101: "host port in use"}

// errKind is one class of error and how often it came.
type errKind struct {
	n        int
	expected bool
	examples []string
}

// stats counts operations, outcomes, errors by kind and latencies.
type stats struct {
	mu    sync.Mutex
	ops   map[string]int // "ADD", "ADD ok", "ADD soak-br-nft"...
	errs  map[string]*errKind
	lat   map[string][]time.Duration
	peak  int
	start time.Time
}

func newStats() *stats {
	return &stats{ops: map[string]int{}, errs: map[string]*errKind{}, lat: map[string][]time.Duration{}, start: time.Now()}
}

// done records one call of verb on net that took d and ended in err.
func (s *stats) done(verb string, net *network, d time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ops[verb]++
	s.ops[verb+" "+net.name]++
	s.lat[verb] = append(s.lat[verb], d)
	if err == nil {
		s.ops[verb+" ok"]++
		return
	}
	code := nettest.Code(err)
	_, known := expectedCodes[code]
	expected := known && verb == "ADD"
	key := fmt.Sprintf("%-6s %-17s code %3d: %s", verb, net.plugin, code, category(err))
	k := s.errs[key]
	if k == nil {
		k = &errKind{expected: expected}
		s.errs[key] = k
	}
	k.n++
	if len(k.examples) < 3 {
		k.examples = append(k.examples, fmt.Sprintf("%s: %v", net.name, err))
	}
}

// violation records an error that is no plugin error: a wrong result, a
// failed ping, a check of the soak's own.
func (s *stats) violation(what string, net *network, err error) {
	s.done(what, net, 0, err)
}

var (
	macs    = regexp.MustCompile(`([0-9a-f]{2}:){5}[0-9a-f]{2}`)
	states  = regexp.MustCompile(`REACHABLE|STALE|DELAY|PROBE|FAILED|INCOMPLETE`)
	numbers = regexp.MustCompile(`[0-9a-f]{6,}|[0-9]+`)
)

// category is an error's message with numbers and hashes folded, short.
func category(err error) string {
	msg := err.Error()
	var te *types.Error
	if errors.As(err, &te) {
		msg = te.Msg
	}
	msg = macs.ReplaceAllString(msg, "MAC")
	msg = states.ReplaceAllString(msg, "STATE")
	msg = numbers.ReplaceAllString(msg, "#")
	if len(msg) > 90 {
		msg = msg[:90] + "..."
	}
	return msg
}

func (s *stats) setPeak(live int) {
	s.mu.Lock()
	s.peak = max(s.peak, live)
	s.mu.Unlock()
}

// unexpected counts the errors that are not expected ones.
func (s *stats) unexpected() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unexpectedLocked()
}

// report prints the soak's figures: ops random operations by workers,
// the calls they made (a DEL variant makes two; teardown DELs count),
// latencies, errors by kind, violations and leaks.
func (s *stats) report(w io.Writer, ops, workers int, dups, leaks []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	el := time.Since(s.start)
	total := 0
	for _, v := range []string{"ADD", "CHECK", "DEL", "GC", "STATUS", "PING"} {
		total += s.ops[v]
	}
	fmt.Fprintf(w, "soak: %d operations by %d workers in %.1f s, %d calls (%.1f/s), peak %d live attachments\n",
		ops, workers, el.Seconds(), total, float64(total)/el.Seconds(), s.peak)
	fmt.Fprintf(w, "  calls:")
	for _, v := range []string{"ADD", "CHECK", "DEL", "GC", "STATUS", "PING"} {
		fmt.Fprintf(w, " %s %d (ok %d)", v, s.ops[v], s.ops[v+" ok"])
	}
	fmt.Fprintf(w, "\n  latency p50/p95/max:")
	for _, v := range []string{"ADD", "CHECK", "DEL", "GC"} {
		if l := s.lat[v]; len(l) > 0 {
			sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
			fmt.Fprintf(w, " %s %v/%v/%v", v, ms(l[len(l)/2]), ms(l[len(l)*95/100]), ms(l[len(l)-1]))
		}
	}
	fmt.Fprintf(w, "\n  errors by kind:\n")
	keys := make([]string, 0, len(s.errs))
	for k := range s.errs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		e := s.errs[k]
		label := "expected  "
		if !e.expected {
			label = "UNEXPECTED"
		}
		fmt.Fprintf(w, "    %s %6d  %s\n", label, e.n, k)
		if !e.expected {
			for _, ex := range e.examples {
				fmt.Fprintf(w, "        e.g. %s\n", ex)
			}
		}
	}
	if len(keys) == 0 {
		fmt.Fprintf(w, "    none\n")
	}
	fmt.Fprintf(w, "  duplicate addresses: %d\n", len(dups))
	for _, d := range dups {
		fmt.Fprintf(w, "    %s\n", d)
	}
	fmt.Fprintf(w, "  leaks: %d\n", len(leaks))
	for _, l := range leaks {
		fmt.Fprintf(w, "    %s\n", l)
	}
	if len(dups)+len(leaks) == 0 && s.unexpectedLocked() == 0 {
		fmt.Fprintf(w, "soak: PASS\n")
	} else {
		fmt.Fprintf(w, "soak: FAIL\n")
	}
}

func (s *stats) unexpectedLocked() int {
	n := 0
	for _, k := range s.errs {
		if !k.expected {
			n += k.n
		}
	}
	return n
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0fms", float64(d)/1e6) }
