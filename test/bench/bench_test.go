package main

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 100; i++ {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {90, 90 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {0, time.Millisecond}} {
		if got := percentile(s, tc.p); got != tc.want {
			t.Errorf("percentile(1..100 ms, %v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("percentile(nil) = %v, want 0", got)
	}
}

func TestSummarize(t *testing.T) {
	s := summarize([]time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond}, 1, 10*time.Millisecond)
	want := Summary{N: 3, Errors: 1, P50: 2, P90: 3, P99: 3, Max: 3, Mean: 2, OpsPS: 300, WallMS: 10}
	if s != want {
		t.Errorf("summarize = %+v, want %+v", s, want)
	}
	if msg := checkSummary(s); !strings.Contains(msg, "1 calls failed") {
		t.Errorf("checkSummary with an error = %q, want it reported", msg)
	}
	s.Errors = 0
	if msg := checkSummary(s); msg != "" {
		t.Errorf("checkSummary of a good summary = %q", msg)
	}
	if msg := checkSummary(summarize(nil, 0, 0)); msg == "" {
		t.Error("checkSummary accepted a summary without samples")
	}
}

func TestRatio(t *testing.T) {
	if got := ratio(6, 2); got != 3 {
		t.Errorf("ratio(6, 2) = %v", got)
	}
	for _, tc := range [][2]float64{{0, 1}, {1, 0}, {math.NaN(), 1}, {math.Inf(1), 1}} {
		if got := ratio(tc[0], tc[1]); !math.IsNaN(got) {
			t.Errorf("ratio(%v, %v) = %v, want NaN", tc[0], tc[1], got)
		}
	}
}

// TestPortMappings: the timed slots (N ≤ 100) and the fill slots (W ≤
// 900) of one scenario never publish the same host port twice.
func TestPortMappings(t *testing.T) {
	seen := map[int]bool{}
	for _, tc := range []struct {
		fill  bool
		slots int
	}{{false, 100}, {true, 900}} {
		for slot := range tc.slots {
			for _, m := range portMappings(slot, tc.fill) {
				p := m["hostPort"].(int)
				if p <= 0 || p > 65535 || seen[p] {
					t.Fatalf("slot %d (fill %v): host port %d out of range or used twice", slot, tc.fill, p)
				}
				seen[p] = true
			}
		}
	}
}

// TestPlotIsSVG renders a report with two W levels and checks that the
// output is well-formed XML with a line per scenario.
func TestPlotIsSVG(t *testing.T) {
	r := &Report{cfg: &config{cs: []int{1}}}
	for _, sc := range []string{"ours/bridge-nft", "ref/bridge+portmap-nft", "floor/exec", "floor/kernel"} {
		run := &Run{Scenario: sc, Status: "ok"}
		for i, w := range []int{0, 500} {
			rd := &Round{W: w, C: 1, Verbs: map[string]*VerbRun{}}
			for _, verb := range Verbs {
				rd.Verbs[verb] = &VerbRun{Summary: Summary{N: 1, P50: float64(i+1) * 2.5}}
			}
			run.Rounds = append(run.Rounds, rd)
		}
		r.Runs = append(r.Runs, run)
	}
	svg := r.plot()
	dec := xml.NewDecoder(strings.NewReader(svg))
	lines := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("plot is not well-formed XML: %v", err)
			}
			break
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "polyline" {
			lines++
		}
	}
	if want := 2 * 4; lines != want { // ADD and DEL panels, 2 scenarios + 2 floors each
		t.Errorf("plot has %d lines, want %d", lines, want)
	}
}

// TestFloorBelow: a plugin must be slower than exec; at C = 1 against the
// lower of floor/exec and the floor timed in its node, so that a burst of
// load during floor/exec alone does not fail the smoke run.
func TestFloorBelow(t *testing.T) {
	round := func(w, c int, p50 float64) *Round {
		return &Round{W: w, C: c, Verbs: map[string]*VerbRun{"ADD": {Summary: Summary{P50: p50}}}}
	}
	report := func(pluginP50 float64) *Report {
		return &Report{Runs: []*Run{
			{Scenario: "floor/exec", Side: "floor", Status: "ok", Rounds: []*Round{round(0, 1, 14.5)}},
			{Scenario: "ours/macvlan", Side: "ours", Status: "ok", Plugins: []string{"macvlan"},
				Probes: []Probe{{W: 20, P50: 3.0}}, Rounds: []*Round{round(20, 1, pluginP50)}},
		}}
	}
	if bad := report(9.1).floorBelow(); len(bad) != 0 {
		t.Errorf("9.1 ms against floors of 14.5 (floor/exec) and 3.0 (in the node): %v, want accepted", bad)
	}
	if bad := report(2.5).floorBelow(); len(bad) != 1 {
		t.Errorf("2.5 ms against a floor of 3.0 in the node: %v, want one complaint", bad)
	}
}

// TestFloorExecLower: the exec floor is timed at the start and the end of a
// run, and every ratio to it uses the lower of the two, so that a burst of
// load during one timing cannot make a plugin look closer to the floor.
func TestFloorExecLower(t *testing.T) {
	round := func(p50 float64) []*Round {
		return []*Round{{W: 0, C: 1, Verbs: map[string]*VerbRun{"ADD": {Summary: Summary{N: 1, P50: p50}}}}}
	}
	for _, tc := range []struct {
		start, end, want float64
	}{{7.8, 3.1, 3.1}, {3.1, 7.8, 3.1}, {3.1, 0, 3.1}} {
		r := &Report{cfg: &config{cs: []int{1}}, Runs: []*Run{
			{Scenario: floorExec, Side: "floor", Status: "ok", Rounds: round(tc.start)},
			{Scenario: "ours/macvlan", Side: "ours", Status: "ok", Rounds: round(6.2)},
		}}
		if tc.end > 0 {
			r.Runs = append(r.Runs, &Run{Scenario: floorExecEnd, Side: "floor", Status: "ok", Rounds: round(tc.end)})
		}
		if got := r.p50(floorExec, 0, 1, "ADD"); got != tc.want {
			t.Errorf("floors %v and %v: exec floor %v, want %v", tc.start, tc.end, got, tc.want)
		}
		r.Ratios = r.ratios()
		if got, want := r.findRatio("ours/exec", "ours/macvlan", floorExec, 0, 1, "ADD"), 6.2/tc.want; got != want {
			t.Errorf("floors %v and %v: macvlan ÷ exec floor = %v, want %v", tc.start, tc.end, got, want)
		}
	}
}

// TestStealLine: the report gives the median and largest steal share of
// the rounds and names those over stealNoisy.
func TestStealLine(t *testing.T) {
	r := &Report{Runs: []*Run{
		{Scenario: "ours/bridge-nft", Rounds: []*Round{{W: 0, C: 1, Steal: 0.01}, {W: 900, C: 1, Steal: 0.02}}},
		{Scenario: "ref/macvlan", Rounds: []*Round{{W: 500, C: 8, Steal: 0.25, StealDropped: []float64{0.3, 0.4}}}},
	}}
	got := stealLine(r)
	for _, want := range []string{"2.0 % of the CPU time during a round (median)", "25.0 % at most", "ref/macvlan W=500 C=8 25 %",
		"1 round over 10 % was timed again, keeping the attempt with the least steal"} {
		if !strings.Contains(got, want) {
			t.Errorf("steal line %q lacks %q", got, want)
		}
	}
	if strings.Contains(got, "bridge-nft W=") {
		t.Errorf("steal line %q names a quiet round", got)
	}
}

// TestParseCPULine: idle counts iowait, steal is the eighth field, and the
// total leaves out guest time (already in user).
func TestParseCPULine(t *testing.T) {
	s, err := parseCPULine("cpu  2381723 0 2296798 4427791 22221 0 128726 254763 50 60")
	if err != nil {
		t.Fatal(err)
	}
	want := cpuSample{idle: 4427791 + 22221, steal: 254763, total: 2381723 + 2296798 + 4427791 + 22221 + 128726 + 254763}
	if s != want {
		t.Errorf("parsed %+v, want %+v", s, want)
	}
	if _, err := parseCPULine("intr 1 2 3"); err == nil {
		t.Error("a line that is not cpu's parsed")
	}
}

// TestQuietRound: a round the hypervisor took over stealRetry of the CPU
// from is timed again, at most stealRetries more times and within the
// time left, and the attempt with the least steal is kept; a failed one
// ends it.
func TestQuietRound(t *testing.T) {
	var calls int
	var steals []float64
	settleRound = func(context.Context) (time.Duration, float64, error) { return 0, 1, nil }
	roundSteal = func() func() float64 { return func() float64 { return steals[calls-1] } }
	t.Cleanup(func() { settleRound, roundSteal = settle, measureSteal })
	for _, tc := range []struct {
		steals    []float64
		left      time.Duration
		fail      int // attempt that fails (1-based), 0: none
		calls     int
		kept      float64
		dropped   int
		wantError bool
	}{
		{steals: []float64{0.02}, left: time.Minute, calls: 1, kept: 0.02},
		{steals: []float64{0.3, 0.05}, left: time.Minute, calls: 2, kept: 0.05, dropped: 1},
		{steals: []float64{0.3, 0.4, 0.2, 0.01}, left: time.Minute, calls: 3, kept: 0.2, dropped: 2},
		{steals: []float64{0.3, 0.01}, left: 0, calls: 1, kept: 0.3},
		{steals: []float64{0.3, 0.01}, left: time.Minute, fail: 2, calls: 2, kept: 0.01, wantError: true},
	} {
		calls, steals = 0, tc.steals
		left := tc.left
		r, err := quietRound(context.Background(), &left, func() (*Round, error) {
			calls++
			r := &Round{}
			if calls == tc.fail {
				return r, errors.New("a call failed")
			}
			return r, nil
		})
		if calls != tc.calls || r == nil || r.Steal != tc.kept || len(r.StealDropped) != tc.dropped || (err != nil) != tc.wantError {
			t.Errorf("steals %v, left %v: %d attempts, kept %+v, error %v; want %d attempts, steal %v kept, %d dropped",
				tc.steals, tc.left, calls, r, err, tc.calls, tc.kept, tc.dropped)
		}
	}
}

// TestTwinFlatness: with an empty twin timed beside the round at the
// largest W, the flatness target divides that round's p50 by the p50 of
// the twin's rounds taken together (one since its calls are interleaved
// with the round's; results before that have two), not by the W=0 round
// timed first.
func TestTwinFlatness(t *testing.T) {
	round := func(w int, samplesMS ...float64) *Round {
		v := &VerbRun{}
		var ds []time.Duration
		for _, m := range samplesMS {
			v.SamplesUS = append(v.SamplesUS, int64(m*1000))
			ds = append(ds, time.Duration(m*float64(time.Millisecond)))
		}
		v.Summary = summarize(ds, 0, time.Second)
		return &Round{W: w, C: 1, Verbs: map[string]*VerbRun{"ADD": v, "CHECK": v, "DEL": v}}
	}
	nft := &Run{Scenario: "ours/bridge-nft", Side: "ours", Status: "ok",
		Probes: []Probe{{W: 0, P50: 3}, {W: 900, P50: 3}},
		Rounds: []*Round{round(0, 5), round(900, 8)}}
	r := &Report{cfg: &config{cs: []int{1}}, Runs: []*Run{nft}}
	flat := func() Target {
		t.Helper()
		r.Ratios = r.ratios()
		for _, tg := range r.targets() {
			if strings.HasPrefix(tg.Name, "bridge-nft ADD flat") {
				return tg
			}
		}
		t.Fatal("no ADD flatness target")
		return Target{}
	}
	if tg := flat(); tg.Status != "miss" || !strings.HasPrefix(tg.Got, "1.60×") {
		t.Errorf("without a twin: %+v, want a miss at 8 ÷ 5", tg)
	}
	// Pooled p50 of 6.0 6.2 6.4 | 7.0 7.2 7.4 7.6 is 7.0; the rounds alone
	// give 6.2 (1.29×) and 7.2 (1.11×).
	nft.Twins = []Twin{{W: 900, C: 1, Rounds: []*Round{round(0, 6.0, 6.2, 6.4), round(0, 7.6, 7.0, 7.4, 7.2)}}}
	tg := flat()
	if got, want := r.findRatio("wmax/twin", "ours/bridge-nft", twinOther, 900, 1, "ADD"), 8.0/7.0; math.Abs(got-want) > 1e-9 {
		t.Errorf("twin ratio %v, want %v", got, want)
	}
	if tg.Status != "pass" || !strings.HasPrefix(tg.Got, "1.14× against an empty twin") || !strings.Contains(tg.Got, "1.60× against W=0 timed first") {
		t.Errorf("with a twin: %+v, want a pass at 8 ÷ 7 that also shows 8 ÷ 5", tg)
	}
	if bad := r.sanity(); len(bad) != 0 {
		t.Errorf("sanity of good twin rounds: %v", bad)
	}
	nft.Twins[0].Rounds[1].Verbs["DEL"] = &VerbRun{Summary: Summary{N: 4, Errors: 2, P50: 7}}
	if bad := r.sanity(); len(bad) != 1 || !strings.Contains(bad[0], "empty twin beside W=900") {
		t.Errorf("sanity with failed twin calls: %v, want one complaint naming the twin", bad)
	}
}

// TestInterleave: the ops take turns call by call, in alternating order,
// and each op's samples, failures and skips stay its own.
func TestInterleave(t *testing.T) {
	var order []string
	errBoom := errors.New("boom")
	op := func(name string, sleep time.Duration, fail, skip int) opFunc {
		return func(_ context.Context, _, i int) error {
			order = append(order, fmt.Sprintf("%s%d", name, i))
			time.Sleep(sleep)
			switch i {
			case fail:
				return errBoom
			case skip:
				return errSkipped
			}
			return nil
		}
	}
	vs := interleave(context.Background(), 4, op("a", 3*time.Millisecond, 1, -1), op("b", 0, -1, 2))
	if got, want := strings.Join(order, " "), "a0 b0 b1 a1 a2 b2 b3 a3"; got != want {
		t.Errorf("order %q, want %q", got, want)
	}
	a, b := vs[0].Summary, vs[1].Summary
	if a.N != 3 || a.Errors != 1 || vs[0].FirstError != "boom" || a.P50 < 3 {
		t.Errorf("op a: %+v (first error %q), want 3 samples of at least 3 ms and 1 failure", a, vs[0].FirstError)
	}
	if b.N != 3 || b.Errors != 0 || vs[1].FirstError != "" || b.Max >= 3 {
		t.Errorf("op b: %+v, want 3 samples under 3 ms, its skip neither a sample nor a failure", b)
	}
	if a.OpsPS <= 0 || a.OpsPS > 1000.0/3 || b.OpsPS <= a.OpsPS {
		t.Errorf("calls per second a %v, b %v: want each over its own calls' time", a.OpsPS, b.OpsPS)
	}
}
