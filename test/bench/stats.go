package main

import (
	"math"
	"slices"
	"time"
)

// Summary condenses the samples of one verb in one round.
type Summary struct {
	N      int     `json:"n"`
	Errors int     `json:"errors"`
	P50    float64 `json:"p50_ms"`
	P90    float64 `json:"p90_ms"`
	P99    float64 `json:"p99_ms"`
	Max    float64 `json:"max_ms"`
	Mean   float64 `json:"mean_ms"`
	OpsPS  float64 `json:"ops_per_s"` // N ÷ wall time of the whole batch
	WallMS float64 `json:"wall_ms"`
}

// summarize computes nearest-rank percentiles of samples; wall is the
// time the batch of concurrent calls took from first start to last end.
func summarize(samples []time.Duration, errs int, wall time.Duration) Summary {
	s := Summary{N: len(samples), Errors: errs, WallMS: ms(wall)}
	if len(samples) == 0 {
		return s
	}
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	var sum time.Duration
	for _, d := range sorted {
		sum += d
	}
	s.P50 = ms(percentile(sorted, 50))
	s.P90 = ms(percentile(sorted, 90))
	s.P99 = ms(percentile(sorted, 99))
	s.Max = ms(sorted[len(sorted)-1])
	s.Mean = ms(sum / time.Duration(len(sorted)))
	if wall > 0 {
		s.OpsPS = float64(len(samples)) / wall.Seconds()
	}
	return s
}

// percentile is the nearest-rank percentile of sorted samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// usable reports whether v is a real, positive measurement.
func usable(v float64) bool { return v > 0 && !math.IsInf(v, 0) && !math.IsNaN(v) }

// ratio is a/b, or NaN when either side is missing.
func ratio(a, b float64) float64 {
	if !usable(a) || !usable(b) {
		return math.NaN()
	}
	return a / b
}
