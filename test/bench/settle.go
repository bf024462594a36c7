package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"
)

// A timed round starts once the machine is quiet: at least settleIdle of
// the CPU idle over one settleWindow, or after settleMax. Otherwise the
// kernel work the previous step left behind (a fill by 4 callers leaves
// hundreds of links and namespaces for the kernel's workers to finish; a
// C = 8 round's deletions run on after it) lands on the next round's
// calls, ours and the reference's alike.
const (
	settleIdle   = 0.85
	settleWindow = 300 * time.Millisecond
	settleMax    = 5 * time.Second
)

// settle waits for a quiet machine and returns how long it waited and the
// idle share of the last window.
func settle(ctx context.Context) (time.Duration, float64, error) {
	start := time.Now()
	prev, err := cpuTimes()
	if err != nil {
		return 0, 0, err
	}
	for {
		select {
		case <-ctx.Done():
			return time.Since(start), 0, ctx.Err()
		case <-time.After(settleWindow):
		}
		cur, err := cpuTimes()
		if err != nil {
			return time.Since(start), 0, err
		}
		idle := 0.0
		if total := cur.total - prev.total; total > 0 {
			idle = float64(cur.idle-prev.idle) / float64(total)
		}
		if idle >= settleIdle || time.Since(start) >= settleMax {
			return time.Since(start), idle, nil
		}
		prev = cur
	}
}

type cpuSample struct{ idle, steal, total uint64 }

// stealSince is the share of the machine's CPU time since prev that the
// hypervisor gave to other guests (steal): time no call could use.
func stealSince(prev cpuSample) float64 {
	cur, err := cpuTimes()
	if err != nil || cur.total <= prev.total {
		return 0 // settle, which reads the same file, fails first
	}
	return float64(cur.steal-prev.steal) / float64(cur.total-prev.total)
}

// cpuTimes reads the machine's CPU time (/proc/stat, first line).
func cpuTimes() (cpuSample, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuSample{}, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return parseCPULine(line)
}

// parseCPULine reads /proc/stat's "cpu" line: idle (with iowait), steal,
// and the total of user, nice, system, idle, iowait, irq, softirq and steal.
func parseCPULine(line string) (cpuSample, error) {
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return cpuSample{}, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var s cpuSample
	for i, v := range f[1:9] {
		var n uint64
		if _, err := fmt.Sscan(v, &n); err != nil {
			return cpuSample{}, fmt.Errorf("/proc/stat: %q: %w", v, err)
		}
		s.total += n
		switch i {
		case 3, 4: // idle, iowait
			s.idle += n
		case 7:
			s.steal = n
		}
	}
	return s, nil
}
