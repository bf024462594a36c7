package main

import (
	"fmt"
	"slices"
)

// sanity checks that the numbers can be trusted at all, never that they
// are fast: every scenario that ran produced non-zero, finite, ordered
// percentiles with no failed call, and the exec floor lies below every
// plugin that does real work.
func (r *Report) sanity() []string {
	var bad []string
	for _, run := range r.Runs {
		if run.Status == "failed" {
			bad = append(bad, fmt.Sprintf("%s failed: %s", run.Scenario, firstLine(run.Reason)))
		}
		if run.Status != "ok" {
			continue
		}
		if len(run.Rounds) == 0 {
			bad = append(bad, run.Scenario+": no rounds")
		}
		run.eachRound(func(name string, rd *Round) {
			for verb, v := range rd.Verbs {
				if msg := checkSummary(v.Summary); msg != "" {
					bad = append(bad, fmt.Sprintf("%s %s %s: %s", run.Scenario, name, verb, msg))
				}
			}
		})
	}
	return append(bad, r.floorBelow()...)
}

func checkSummary(s Summary) string {
	switch {
	case s.Errors > 0:
		return fmt.Sprintf("%d calls failed", s.Errors)
	case s.N == 0:
		return "no samples"
	case !usable(s.P50) || !usable(s.P90) || !usable(s.P99) || !usable(s.Max) || !usable(s.OpsPS):
		return fmt.Sprintf("unusable numbers %+v", s)
	case s.P50 > s.P90 || s.P90 > s.P99 || s.P99 > s.Max:
		return fmt.Sprintf("percentiles out of order %+v", s)
	}
	return ""
}

// floorBelow checks that the no-op plugin is faster than every plugin
// that changes kernel state, at the same number of callers (at C = 1,
// the lower of its two measurements). none and
// loopback only set lo up, so they sit within noise of the floor and are
// left out.
func (r *Report) floorBelow() []string {
	if !slices.ContainsFunc(r.Runs, func(run *Run) bool { return run.Scenario == floorExec }) {
		return nil // left out with -only
	}
	var bad []string
	for _, run := range r.Runs {
		if run.Status != "ok" || run.Side == "floor" || len(run.Plugins) == 0 ||
			run.Plugins[0] == "none" || run.Plugins[0] == "loopback" {
			continue
		}
		for _, rd := range run.Rounds {
			floor, ok := r.summary(floorExec, 0, rd.C, "ADD")
			if !ok {
				return append(bad, "no exec floor measured")
			}
			// The lower of floor/exec and the floor timed in this node just
			// before the round (C = 1): a burst of load during one of them
			// must not make a plugin look faster than exec.
			lowest := floor.P50
			if p := probeAt(run, rd.W); rd.C == 1 && usable(p) && p < lowest {
				lowest = p
			}
			if p := rd.Verbs["ADD"].Summary.P50; p <= lowest {
				bad = append(bad, fmt.Sprintf("%s W=%d C=%d: ADD p50 %.2f ms is not above the exec floor's %.2f ms",
					run.Scenario, rd.W, rd.C, p, lowest))
			}
		}
	}
	return bad
}
