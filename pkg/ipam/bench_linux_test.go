package ipam

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// BenchmarkAllocateRelease measures one in-process ADD (Allocate), the
// DEL-time lookup (Addresses) and the DEL (Release), each reported on its
// own, with n other allocations in the network, on the data dir TMPDIR
// holds. The reference host-local walks all n entries on every DEL.
func BenchmarkAllocateRelease(b *testing.B) {
	log.SetOutput(io.Discard)
	defer log.SetOutput(os.Stderr)
	for _, n := range []int{0, 900} {
		b.Run(fmt.Sprintf("existing=%d", n), func(b *testing.B) {
			conf, _ := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "bench", "ipam": map[string]any{
				"type": "host-local", "subnet": "10.20.0.0/20", "dataDir": b.TempDir()}})
			c, err := Load(conf, nil)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			for i := range n {
				if _, err := Allocate(ctx, c, key(fmt.Sprintf("pre%d", i))); err != nil {
					b.Fatal(err)
				}
			}
			var alloc, lookup, rel time.Duration
			cpu0 := cpuTime()
			b.ResetTimer()
			for i := range b.N {
				k := key(fmt.Sprintf("b%d", i))
				t0 := time.Now()
				if _, err := Allocate(ctx, c, k); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if a, err := Addresses(ctx, c, k); err != nil || len(a) != 1 {
					b.Fatal(a, err)
				}
				t2 := time.Now()
				if err := Release(ctx, c, k); err != nil {
					b.Fatal(err)
				}
				alloc, lookup, rel = alloc+t1.Sub(t0), lookup+t2.Sub(t1), rel+time.Since(t2)
			}
			// CPU time (user+system) of all three calls: what they cost
			// the node, independent of how long they waited for a CPU.
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
			b.ReportMetric(float64(alloc.Microseconds())/float64(b.N), "alloc-µs/op")
			b.ReportMetric(float64(lookup.Microseconds())/float64(b.N), "addresses-µs/op")
			b.ReportMetric(float64(rel.Microseconds())/float64(b.N), "release-µs/op")
		})
	}
}

// BenchmarkRebuild measures the one walk that follows a foreign change
// (the reference binary wrote into the network), at 900 allocations.
func BenchmarkRebuild(b *testing.B) {
	log.SetOutput(io.Discard)
	defer log.SetOutput(os.Stderr)
	conf, _ := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "bench", "ipam": map[string]any{
		"type": "host-local", "subnet": "10.20.0.0/20", "dataDir": b.TempDir()}})
	c, err := Load(conf, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for i := range 900 {
		if _, err := Allocate(ctx, c, key(fmt.Sprintf("pre%d", i))); err != nil {
			b.Fatal(err)
		}
	}
	foreign := filepath.Join(c.DataDir, c.network, "10.20.15.1")
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		os.WriteFile(foreign, []byte("ref\r\neth0"), 0o600) // what the reference does
		b.StartTimer()
		if _, err := Addresses(ctx, c, key("ref")); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.Remove(foreign)
		b.StartTimer()
		if _, err := Addresses(ctx, c, key("ref")); err != nil {
			b.Fatal(err)
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
