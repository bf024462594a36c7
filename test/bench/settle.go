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

// A round during which the hypervisor gave more than stealRetry of the
// CPU time to other guests times them more than the plugins: it is timed
// again, at most stealRetries more times and while the run's time for
// this (config.retryLeft) lasts, and the attempt with the least steal is
// kept. Ours and the reference's alike.
const (
	stealRetry   = 0.10
	stealRetries = 2
)

// settleRound and roundSteal are settle and measureSteal, replaced in tests.
var settleRound, roundSteal = settle, measureSteal

// measureSteal starts measuring the steal share; the function it returns
// ends the measurement.
func measureSteal() func() float64 {
	start, _ := cpuTimes()
	return func() float64 { return stealSince(start) }
}

// quietRound times a round with time1 once the machine is quiet (settle),
// records the steal share during it, and times it again while the
// hypervisor took too much (see stealRetry). An attempt that failed is
// returned as it is.
func quietRound(ctx context.Context, left *time.Duration, time1 func() (*Round, error)) (*Round, error) {
	var best *Round
	var dropped []float64
	for try := 0; ; try++ {
		waited, idle, err := settleRound(ctx)
		if err != nil {
			return nil, err
		}
		start, stop := time.Now(), roundSteal()
		r, err := time1()
		if r == nil {
			return nil, err
		}
		r.SettleMS, r.Idle, r.Steal = ms(waited), idle, stop()
		if err != nil {
			return r, err
		}
		switch {
		case best == nil:
			best = r
		case r.Steal < best.Steal:
			dropped, best = append(dropped, best.Steal), r
		default:
			dropped = append(dropped, r.Steal)
		}
		took := time.Since(start)
		if best.Steal <= stealRetry || try == stealRetries || took > *left || ctx.Err() != nil {
			best.StealDropped = dropped
			return best, nil
		}
		*left -= took
		progress("    the hypervisor took %.0f %% of the CPU time during that round (W=%d C=%d): timing it again", r.Steal*100, r.W, r.C)
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
