package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// Ratio is one derived comparison of p50 latencies.
type Ratio struct {
	Kind     string  `json:"kind"` // ours/exec, del-kernel-ms, ref/ours, wmax/w0
	Scenario string  `json:"scenario"`
	Other    string  `json:"other"`
	W        int     `json:"w"`
	C        int     `json:"c"`
	Verb     string  `json:"verb"`
	Value    float64 `json:"value"`
}

// refPairs are the like-for-like comparisons: reference job, our job.
// "ref/bridge+portmap-best" is the faster of the two portmap backends at
// each W, C and verb, the one the targets compare against.
var refPairs = [][2]string{
	{"ref/bridge+portmap-best", "ours/bridge-nft"},
	{"ref/bridge+portmap-nft", "ours/bridge-nft"},
	{"ref/bridge+portmap-ipt", "ours/bridge-ipt"},
	{"ref/bridge", "ours/bridge-nft"},
	{"ref/macvlan", "ours/macvlan"},
	{"ref/loopback", "ours/loopback"},
}

// summary finds one verb's summary of a scenario's round. Two names stand
// for the lower of two scenarios: the reference's faster backend, and the
// exec floor timed at the start and at the end of the run.
func (r *Report) summary(scenario string, w, c int, verb string) (Summary, bool) {
	switch scenario {
	case "ref/bridge+portmap-best":
		return r.lower("ref/bridge+portmap-ipt", "ref/bridge+portmap-nft", w, c, verb)
	case floorExec:
		return r.lower(floorExec, floorExecEnd, w, c, verb)
	}
	return r.timed(scenario, w, c, verb)
}

// lower is the summary of scenario a or b, whichever has the lower p50.
func (r *Report) lower(a, b string, w, c int, verb string) (Summary, bool) {
	sa, aok := r.timed(a, w, c, verb)
	sb, bok := r.timed(b, w, c, verb)
	if !aok || (bok && sb.P50 < sa.P50) {
		return sb, bok
	}
	return sa, aok
}

// timed is the summary of one scenario's round at w, c for verb.
func (r *Report) timed(scenario string, w, c int, verb string) (Summary, bool) {
	for _, run := range r.Runs {
		if run.Scenario != scenario {
			continue
		}
		for _, rd := range run.Rounds {
			if v, ok := rd.Verbs[verb]; ok && rd.W == w && rd.C == c && usable(v.Summary.P50) {
				return v.Summary, true
			}
		}
	}
	return Summary{}, false
}

func (r *Report) p50(scenario string, w, c int, verb string) float64 {
	if s, ok := r.summary(scenario, w, c, verb); ok {
		return s.P50
	}
	return math.NaN()
}

// levels lists the W levels measured for a scenario.
func (r *Report) levels(scenario string) []int {
	var ws []int
	for _, run := range r.Runs {
		for _, rd := range run.Rounds {
			if run.Scenario == scenario && !slices.Contains(ws, rd.W) {
				ws = append(ws, rd.W)
			}
		}
	}
	return ws
}

func (r *Report) ratios() []Ratio {
	var out []Ratio
	add := func(kind, sc, other string, w, c int, verb string, v float64) {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			out = append(out, Ratio{kind, sc, other, w, c, verb, v})
		}
	}
	for _, run := range r.Runs {
		if run.Side != "ours" {
			continue
		}
		ws := r.levels(run.Scenario)
		for _, rd := range run.Rounds {
			for _, verb := range Verbs {
				add("ours/exec", run.Scenario, floorExec, rd.W, rd.C, verb,
					ratio(r.p50(run.Scenario, rd.W, rd.C, verb), r.p50(floorExec, 0, rd.C, verb)))
			}
			ours, floor := r.p50(run.Scenario, rd.W, rd.C, "DEL"), r.p50("floor/kernel", 0, rd.C, "DEL")
			if run.Links && usable(ours) && usable(floor) {
				add("del-kernel-ms", run.Scenario, "floor/kernel", rd.W, rd.C, "DEL", ours-floor)
			}
			for _, tw := range run.Twins {
				if tw.W != rd.W || tw.C != rd.C {
					continue
				}
				for _, verb := range Verbs {
					add("wmax/twin", run.Scenario, twinOther, rd.W, rd.C, verb,
						ratio(r.p50(run.Scenario, rd.W, rd.C, verb), pooledP50(tw.Rounds, verb)))
				}
			}
			if wmax := slices.Max(ws); len(ws) > 1 && rd.W == wmax {
				drift := ratio(probeAt(run, wmax), probeAt(run, 0))
				for _, verb := range Verbs {
					flat := ratio(r.p50(run.Scenario, wmax, rd.C, verb), r.p50(run.Scenario, 0, rd.C, verb))
					add("wmax/w0", run.Scenario, fmt.Sprintf("W=%d", wmax), wmax, rd.C, verb, flat)
					add("wmax/w0-load", run.Scenario, fmt.Sprintf("W=%d", wmax), wmax, rd.C, verb, ratio(flat, drift))
				}
			}
		}
	}
	for _, pair := range refPairs {
		ref := pair[0]
		if strings.HasSuffix(ref, "-best") {
			ref = "ref/bridge+portmap-nft"
		}
		for _, w := range r.levels(ref) {
			for _, c := range r.cfg.cs {
				for _, verb := range Verbs {
					add("ref/ours", pair[1], pair[0], w, c, verb, ratio(r.p50(pair[0], w, c, verb), r.p50(pair[1], w, c, verb)))
				}
			}
		}
	}
	return out
}

// twinOther names the empty twin node in the flatness ratios against it.
const twinOther = "empty twin, W=0"

// pooledP50 is the p50 of verb's samples of all rounds together.
func pooledP50(rounds []*Round, verb string) float64 {
	var all []time.Duration
	for _, rd := range rounds {
		if v, ok := rd.Verbs[verb]; ok {
			for _, us := range v.SamplesUS {
				all = append(all, time.Duration(us)*time.Microsecond)
			}
		}
	}
	return summarize(all, 0, 0).P50
}

// probeAt is the exec floor measured in run's node at level w.
func probeAt(run *Run, w int) float64 {
	for _, p := range run.Probes {
		if p.W == w {
			return p.P50
		}
	}
	return math.NaN()
}

func (r *Report) findRatio(kind, sc, other string, w, c int, verb string) float64 {
	for _, x := range r.Ratios {
		if x.Kind == kind && x.Scenario == sc && x.Other == other && x.W == w && x.C == c && x.Verb == verb {
			return x.Value
		}
	}
	return math.NaN()
}

func (r *Report) ratioMarkdown(b *strings.Builder) {
	type row struct {
		sc, other string
		w, c      int
	}
	table := func(title, kind string, cell func(float64) string) {
		var rows []row
		for _, x := range r.Ratios {
			k := row{x.Scenario, x.Other, x.W, x.C}
			if x.Kind == kind && !slices.Contains(rows, k) {
				rows = append(rows, k)
			}
		}
		if len(rows) == 0 {
			return
		}
		fmt.Fprintf(b, "\n%s\n\n| ours | compared with | W | C | ADD | CHECK | DEL |\n|---|---|--:|--:|--:|--:|--:|\n", title)
		for _, k := range rows {
			fmt.Fprintf(b, "| %s | %s | %d | %d", k.sc, k.other, k.w, k.c)
			for _, verb := range Verbs {
				b.WriteString(" | " + cell(r.findRatio(kind, k.sc, k.other, k.w, k.c, verb)))
			}
			b.WriteString(" |\n")
		}
	}
	table("Ours ÷ exec floor (p50; the floor at W=0, same C, the lower of its timings at the start and the end of the run):", "ours/exec", fmtX)
	table("DEL p50 − kernel floor DEL p50 (ms, same C):", "del-kernel-ms", fmtMS)
	table("Reference ÷ ours (p50, same W and C; higher is better for ours):", "ref/ours", fmtX)
	table("Flatness, p50 at the largest W ÷ p50 at W=0:", "wmax/w0", fmtX)
	table("Flatness corrected for load drift: the above ÷ the same ratio of the exec floor, timed in the same node just before each level:", "wmax/w0-load", fmtX)
	table("Flatness against an empty twin: p50 at the largest W ÷ p50 of the same plugin in a second node kept empty, its calls interleaved with those at the largest W, one for one:", "wmax/twin", fmtX)
}

// Target is one of issue 7's targets, evaluated on this run.
type Target struct {
	Name   string `json:"name"`
	Want   string `json:"want"`
	Got    string `json:"got"`
	Status string `json:"status"` // pass, miss, not measured
}

func verdict(ok bool, measured bool) string {
	switch {
	case !measured:
		return "not measured"
	case ok:
		return "pass"
	}
	return "miss"
}

func (r *Report) targets() []Target {
	var out []Target
	exec := func(sc, label string, w, c int) {
		v := r.findRatio("ours/exec", sc, floorExec, w, c, "ADD")
		out = append(out, Target{fmt.Sprintf("%s ADD p50 at W=%d, C=%d", label, w, c), "≤ 4× exec floor",
			fmtX(v), verdict(v <= 4, usable(v))})
	}
	nft, mv := "ours/bridge-nft", "ours/macvlan"
	wmax := 900
	if ws := r.levels(nft); len(ws) > 0 {
		wmax = slices.Max(ws)
	}
	exec(nft, "bridge-nft", wmax, 1)
	for _, w := range r.levelsOr(nft, wmax) {
		v := r.findRatio("del-kernel-ms", nft, "floor/kernel", w, 1, "DEL")
		got := fmtMS(v) + " ms" // a DEL under the floor shows as negative
		if v > 0 {
			got = "+" + got
		}
		out = append(out, Target{fmt.Sprintf("bridge-nft DEL p50 at W=%d, C=1", w), "≤ kernel floor + 3 ms",
			got, verdict(v <= 3, !math.IsNaN(v))})
	}
	wref := 500
	if r.cfg.quick {
		wref = 0
	}
	for _, c := range r.cfg.cs {
		for _, vw := range []struct {
			verb string
			want float64
		}{{"ADD", 30}, {"DEL", 5}} {
			verb, want := vw.verb, vw.want
			v := r.findRatio("ref/ours", nft, "ref/bridge+portmap-best", wref, c, verb)
			out = append(out, Target{fmt.Sprintf("bridge-nft %s p50 vs reference bridge+portmap (faster backend) at W=%d, C=%d", verb, wref, c),
				fmt.Sprintf("≥ %.0f× faster", want), fmtX(v), verdict(v >= want, usable(v))})
		}
	}
	for _, verb := range []string{"ADD", "DEL"} {
		seq := r.findRatio("wmax/w0", nft, fmt.Sprintf("W=%d", wmax), wmax, 1, verb)
		corrected := r.findRatio("wmax/w0-load", nft, fmt.Sprintf("W=%d", wmax), wmax, 1, verb)
		v, got := seq, fmt.Sprintf("%s (%s corrected for load drift)", fmtX(seq), fmtX(corrected))
		// W=0 timed beside W=900 rather than minutes before it, when there is one.
		if twin := r.findRatio("wmax/twin", nft, twinOther, wmax, 1, verb); usable(twin) {
			v, got = twin, fmt.Sprintf("%s against an empty twin timed call by call alongside (%s against W=0 timed first, %s corrected for load drift)",
				fmtX(twin), fmtX(seq), fmtX(corrected))
		}
		out = append(out, Target{fmt.Sprintf("bridge-nft %s flat: p50(W=%d) ÷ p50(W=0), C=1", verb, wmax), "≤ 1.2",
			got, verdict(v <= 1.2, usable(v))})
	}
	for _, w := range r.levelsOr(mv, 0) {
		exec(mv, "macvlan", w, 1)
	}
	return append(out, r.rssTargets()...)
}

func (r *Report) levelsOr(sc string, def int) []int {
	if ws := r.levels(sc); len(ws) > 0 {
		return ws
	}
	return []int{def}
}

// rssTargets compares the peak RSS of our one binary with the largest
// process of the reference chain doing the same job.
func (r *Report) rssTargets() []Target {
	jobs := []struct {
		name string
		ours []string
		ref  []string
	}{
		{"bridge, masquerade, ports", []string{"host-local-bridge"}, []string{"bridge", "host-local", "portmap"}},
		{"macvlan + host-local", []string{"macvlan"}, []string{"macvlan", "host-local"}},
		{"loopback", []string{"loopback"}, []string{"loopback"}},
	}
	var out []Target
	for _, j := range jobs {
		for _, verb := range Verbs {
			o, f := r.peakRSS("ours", j.ours, verb), r.peakRSS("ref", j.ref, verb)
			out = append(out, Target{fmt.Sprintf("peak RSS, %s, %s", j.name, verb), "≤ reference",
				fmt.Sprintf("%d KiB vs %d KiB", o, f), verdict(o <= f, o > 0 && f > 0)})
		}
	}
	return out
}

func (r *Report) peakRSS(side string, plugins []string, verb string) int64 {
	var peak int64
	for _, u := range r.Usage {
		if u.Side == side && u.Verb == verb && slices.Contains(plugins, u.Plugin) {
			peak = max(peak, u.RSSMax)
		}
	}
	return peak
}

func (r *Report) targetMarkdown(b *strings.Builder) {
	b.WriteString("\nTargets (issue 7):\n\n| target | want | got | |\n|---|---|---|---|\n")
	for _, t := range r.Targets {
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", t.Name, t.Want, t.Got, t.Status)
	}
}
