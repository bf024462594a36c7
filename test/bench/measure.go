package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// Verbs are timed in this order in every round.
var Verbs = []string{"ADD", "CHECK", "DEL"}

// Run is the outcome of one scenario.
type Run struct {
	Scenario string   `json:"scenario"`
	Side     string   `json:"side"`
	What     string   `json:"what"`
	Plugins  []string `json:"plugins,omitempty"`
	Ports    bool     `json:"ports"`
	Links    bool     `json:"links"`
	Status   string   `json:"status"` // ok, skipped or failed
	Reason   string   `json:"reason,omitempty"`
	Fill     []Fill   `json:"fill,omitempty"`
	Probes   []Probe  `json:"floor_probes,omitempty"` // the exec floor in this node at each W
	Rounds   []*Round `json:"rounds,omitempty"`
	Twins    []Twin   `json:"twins,omitempty"`
	Seconds  float64  `json:"seconds"`
}

// Fill records how long bringing the live attachments up to W took, and
// the ADDs that failed on the way (each was retried).
type Fill struct {
	W          int     `json:"w"`
	Seconds    float64 `json:"seconds"`
	FailedADDs int     `json:"failed_adds,omitempty"`
	Missing    int     `json:"missing,omitempty"` // attachments that failed every attempt
	FirstError string  `json:"first_error,omitempty"`
}

// Twin holds the round of a scenario's plugin in a second node kept empty
// (W=0 there), whose calls were interleaved with those of its round at W,
// call by call. The W levels are timed one after the other, a minute or
// more apart, and this machine's speed drifts by more than the flatness
// bound over that time, and even between two rounds timed one after the
// other; calls at W=0 and at W taken in turn do not.
type Twin struct {
	W      int      `json:"w"` // the level of the round the twin's calls were interleaved with
	C      int      `json:"c"`
	Rounds []*Round `json:"rounds"`
}

// eachRound calls fn with every round of run, its twins' too, and the name
// the report gives it.
func (run *Run) eachRound(fn func(name string, rd *Round)) {
	for _, rd := range run.Rounds {
		fn(fmt.Sprintf("W=%d C=%d", rd.W, rd.C), rd)
	}
	for _, tw := range run.Twins {
		for _, rd := range tw.Rounds {
			fn(twinName(tw.W, tw.C), rd)
		}
	}
}

// twinName names the rounds of the twin beside the round at w, c.
func twinName(w, c int) string { return fmt.Sprintf("empty twin beside W=%d C=%d", w, c) }

// Round is N ADDs, then N CHECKs, then N DELs by C callers, with W other
// attachments live throughout.
type Round struct {
	W     int                 `json:"w"`
	C     int                 `json:"c"`
	Verbs map[string]*VerbRun `json:"verbs"`
	// SettleMS is how long the round waited for a quiet machine, Idle
	// the CPU's idle share when it started (settle.go).
	SettleMS float64 `json:"settle_ms"`
	Idle     float64 `json:"idle_at_start"`
	// Steal is the share of the machine's CPU time the hypervisor gave
	// to other guests during the round; StealDropped that of the attempts
	// timed before or after it and dropped for more of it (settle.go).
	Steal        float64   `json:"steal"`
	StealDropped []float64 `json:"steal_dropped,omitempty"`

	twin *Round // the empty twin's calls, interleaved with these
}

// VerbRun holds one verb's raw samples (successful calls, µs) and summary.
type VerbRun struct {
	Summary    Summary `json:"summary"`
	CPUMeanMS  float64 `json:"cpu_mean_ms"` // user+sys of all plugins of the list, per call
	SamplesUS  []int64 `json:"samples_us"`
	FirstError string  `json:"first_error,omitempty"`
}

// opFunc performs operation i on behalf of caller worker.
type opFunc func(ctx context.Context, worker, i int) error

// errSkipped marks an operation not attempted (CHECK of a failed ADD):
// neither a sample nor a failure.
var errSkipped = errors.New("skipped")

// batch runs n operations with c concurrent callers, timing each.
func batch(ctx context.Context, c, n int, fn opFunc) *VerbRun {
	samples := make([]time.Duration, n)
	failed, skipped := make([]bool, n), 0
	var (
		next     atomic.Int64
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	for w := range c {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				t := time.Now()
				err := fn(ctx, w, i)
				samples[i] = time.Since(t)
				if errors.Is(err, errSkipped) {
					mu.Lock()
					samples[i], skipped = 0, skipped+1
					mu.Unlock()
				} else if err != nil {
					failed[i] = true
					mu.Lock()
					firstErr = cmp.Or(firstErr, err)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return verbRun(ctx, samples, failed, skipped, time.Since(start), firstErr)
}

// verbRun summarizes the samples of a verb's operations (failed and skipped
// ones included), which took wall.
func verbRun(ctx context.Context, samples []time.Duration, failed []bool, skipped int, wall time.Duration, firstErr error) *VerbRun {
	var ok []time.Duration
	for i, d := range samples {
		if !failed[i] && d > 0 {
			ok = append(ok, d)
		}
	}
	if ctx.Err() != nil {
		firstErr = cmp.Or(firstErr, ctx.Err())
	}
	v := &VerbRun{Summary: summarize(ok, len(samples)-skipped-len(ok), wall)}
	for _, d := range ok {
		v.SamplesUS = append(v.SamplesUS, d.Microseconds())
	}
	if firstErr != nil {
		v.FirstError = firstErr.Error()
	}
	return v
}

// interleave runs n operations of each of ops by one caller, call by
// call: operation i of every op, in an order that alternates (0 then 1,
// then 1 then 0), so that neither the machine's drift nor what a call
// leaves behind favours one op. Each op's calls per second are over its
// own calls' time.
func interleave(ctx context.Context, n int, ops ...opFunc) []*VerbRun {
	samples, failed := make([][]time.Duration, len(ops)), make([][]bool, len(ops))
	skipped, firstErr := make([]int, len(ops)), make([]error, len(ops))
	for k := range ops {
		samples[k], failed[k] = make([]time.Duration, n), make([]bool, n)
	}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		for j := range ops {
			k := j
			if i%2 == 1 {
				k = len(ops) - 1 - j
			}
			t := time.Now()
			err := ops[k](ctx, 0, i)
			samples[k][i] = time.Since(t)
			switch {
			case errors.Is(err, errSkipped):
				samples[k][i], skipped[k] = 0, skipped[k]+1
			case err != nil:
				failed[k][i], firstErr[k] = true, cmp.Or(firstErr[k], err)
			}
		}
	}
	out := make([]*VerbRun, len(ops))
	for k := range ops {
		var own time.Duration
		for _, d := range samples[k] {
			own += d
		}
		out[k] = verbRun(ctx, samples[k], failed[k], skipped[k], own, firstErr[k])
	}
	return out
}

// pluginBench runs a plugin scenario inside env.
type pluginBench struct {
	sc   Scenario
	cfg  *config
	env  *hostEnv
	cni  *runner
	list *libcni.NetworkConfigList
	pool []*nettest.NS // namespaces of the timed attachments
	live int           // fill attachments up

	probeCNI  *runner // the exec floor, timed at each W level (probe.go)
	probeList *libcni.NetworkConfigList
}

func newPluginBench(sc Scenario, cfg *config, env *hostEnv, u *usage) (*pluginBench, error) {
	b, err := json.Marshal(sc.conflist(filepath.Join(env.work, "ipam")))
	if err != nil {
		return nil, err
	}
	list, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("conflist of %s: %w", sc.Name, err)
	}
	p := &pluginBench{sc: sc, cfg: cfg, env: env, list: list,
		cni: newRunner(env.host, cfg, sc.Side, filepath.Join(env.work, "cache"), filepath.Join(env.work, "state"), u)}
	if p.probeCNI, p.probeList, err = probeRunner(cfg, env); err != nil {
		return nil, err
	}
	p.pool, err = env.containers(sc.N)
	return p, err
}

// rt is the runtime config containerd would send for an attachment.
func (p *pluginBench) rt(id string, ns *nettest.NS, slot int, fill bool) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: ns.Path(), IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "bench"},
			{"K8S_POD_NAME", id}, {"K8S_POD_INFRA_CONTAINER_ID", id}}}
	if p.sc.Ports {
		rt.CapabilityArgs = map[string]any{"portMappings": portMappings(slot, fill)}
	}
	return rt
}

// lifecycles runs count untimed ADD, CHECK, DEL cycles in a fresh
// namespace: as a warm-up, so that the first timed call does not pay for
// loading the binaries or creating the bridge and the firewall tables,
// and under the rusage helper to record peak RSS.
func (p *pluginBench) lifecycles(ctx context.Context, what string, count int) error {
	nss, err := p.env.containers(1)
	if err != nil {
		return err
	}
	for i := range count {
		rt := p.rt(fmt.Sprintf("%s-%d", what, i), nss[0], 0, false)
		if _, err := p.cni.AddNetworkList(ctx, p.list, rt); err != nil {
			return fmt.Errorf("%s ADD: %w", what, err)
		}
		if err := p.cni.CheckNetworkList(ctx, p.list, rt); err != nil {
			return fmt.Errorf("%s CHECK: %w", what, err)
		}
		if err := p.cni.DelNetworkList(ctx, p.list, rt); err != nil {
			return fmt.Errorf("%s DEL: %w", what, err)
		}
	}
	return nil
}

// fillTo brings the live attachments up to w, untimed, with many callers.
// A failed ADD is followed by a DEL and retried, as a runtime retries a
// sandbox; the failures are reported with the fill.
func (p *pluginBench) fillTo(ctx context.Context, w int) (Fill, error) {
	start := time.Now()
	nss, err := p.env.containers(w - p.live)
	if err != nil {
		return Fill{}, err
	}
	base := p.live
	var (
		mu    sync.Mutex
		fails int
		first string
	)
	v := batch(ctx, p.cfg.fillC, len(nss), func(ctx context.Context, _, i int) error {
		rt := p.rt(fmt.Sprintf("fill-%d", base+i), nss[i], base+i, true)
		var err error
		for range fillAttempts {
			if _, err = p.cni.AddNetworkList(ctx, p.list, rt); err == nil || ctx.Err() != nil {
				break
			}
			mu.Lock()
			fails++
			first = cmp.Or(first, err.Error())
			mu.Unlock()
			err = errors.Join(err, p.cni.DelNetworkList(ctx, p.list, rt))
		}
		return err
	})
	p.live = w
	f := Fill{W: w, Seconds: time.Since(start).Seconds(), FailedADDs: fails, Missing: v.Summary.Errors, FirstError: first}
	// A few attachments short of W changes nothing measurable; more does.
	if v.Summary.Errors > w/100+1 || ctx.Err() != nil {
		return f, fmt.Errorf("fill to W=%d: %d attachments failed %d times, first: %s", w, v.Summary.Errors, fillAttempts, cmp.Or(v.FirstError, first))
	}
	return f, nil
}

// fillAttempts bounds the ADDs tried per fill attachment.
const fillAttempts = 3

// ops are the calls of a round of c callers at the current W: N ADDs,
// CHECKs and DELs, each verb's operation i on attachment i.
func (p *pluginBench) ops(c int) map[string]opFunc {
	rts := make([]*libcni.RuntimeConf, len(p.pool))
	for i, ns := range p.pool {
		rts[i] = p.rt(fmt.Sprintf("timed-w%d-c%d-%d", p.live, c, i), ns, i, false)
	}
	added := make([]bool, len(rts))
	return map[string]opFunc{
		"ADD": func(ctx context.Context, _, i int) error {
			_, err := p.cni.AddNetworkList(ctx, p.list, rts[i])
			added[i] = err == nil
			return err
		},
		"CHECK": func(ctx context.Context, _, i int) error {
			if !added[i] {
				return errSkipped // no result to check; the ADD failure is counted
			}
			return p.cni.CheckNetworkList(ctx, p.list, rts[i])
		},
		// DEL runs after a failed ADD too, as a runtime does.
		"DEL": func(ctx context.Context, _, i int) error { return p.cni.DelNetworkList(ctx, p.list, rts[i]) },
	}
}

// rounds times a round of c callers in each of ps, every verb in turn.
// With two benches (c = 1) their calls are interleaved: a round of the
// empty twin beside the round at the largest W.
func rounds(ctx context.Context, c int, ps ...*pluginBench) ([]*Round, error) {
	ops := make([]map[string]opFunc, len(ps))
	out := make([]*Round, len(ps))
	for k, p := range ps {
		ops[k] = p.ops(c)
		out[k] = &Round{W: p.live, C: c, Verbs: map[string]*VerbRun{}}
	}
	var errs []error
	for _, verb := range Verbs {
		var vs []*VerbRun
		for _, p := range ps {
			p.cni.takeCPU()
		}
		if len(ps) == 1 {
			vs = []*VerbRun{batch(ctx, c, len(ps[0].pool), ops[0][verb])}
		} else {
			var fns []opFunc
			for k := range ps {
				fns = append(fns, ops[k][verb])
			}
			vs = interleave(ctx, len(ps[0].pool), fns...)
		}
		for k, v := range vs {
			v.CPUMeanMS = ms(ps[k].cni.takeCPU()) / float64(len(ps[k].pool))
			out[k].Verbs[verb] = v
			if v.FirstError != "" {
				errs = append(errs, fmt.Errorf("%s%s: %d failed, first: %s", []string{"", "twin "}[min(k, 1)], verb, v.Summary.Errors, v.FirstError))
			}
		}
	}
	return out, errors.Join(errs...)
}

// runPlugin runs every W level and every C of a plugin scenario. A round
// with failed calls does not stop it: the failures are counted in the
// round and returned at the end, so the scenario is reported as failed
// with all its numbers.
func runPlugin(ctx context.Context, sc Scenario, cfg *config, env *hostEnv, u *usage, run *Run) (err error) {
	p, err := newPluginBench(sc, cfg, env, u)
	if err != nil {
		return err
	}
	if err := p.lifecycles(ctx, "warmup", 2); err != nil {
		return err
	}
	var twin *pluginBench
	if sc.Twin && len(sc.Ws) > 1 {
		var tenv *hostEnv
		if tenv, err = newHostEnv(env.reg, sc.Name+"-twin"); err != nil {
			return err
		}
		defer func() { err = errors.Join(err, tenv.close()) }() // err: runPlugin's own
		// Its own usage: the twin's calls stay out of the per-call tables.
		if twin, err = newPluginBench(sc, cfg, tenv, newUsage()); err != nil {
			return err
		}
		if err := twin.lifecycles(ctx, "warmup", 2); err != nil {
			return err
		}
	}
	var roundErrs []error
	for _, w := range sc.Ws {
		if w > p.live {
			f, err := p.fillTo(ctx, w)
			run.Fill = append(run.Fill, f)
			if err != nil {
				return err
			}
			progress("  %s: filled to W=%d in %.1f s", sc.Name, w, f.Seconds)
			if f.FailedADDs > 0 {
				progress("  %s: WARNING: %d ADDs failed while filling and were retried (%d attachments never came up); first: %s",
					sc.Name, f.FailedADDs, f.Missing, f.FirstError)
				roundErrs = append(roundErrs, fmt.Errorf("fill to W=%d: %d ADDs failed, first: %s", w, f.FailedADDs, f.FirstError))
			}
		}
		if _, _, err := settle(ctx); err != nil {
			return err
		}
		pr, err := p.probe(ctx)
		if err != nil {
			return err
		}
		run.Probes = append(run.Probes, pr)
		for _, c := range cfg.cs {
			var beside *pluginBench
			if twin != nil && c == 1 && w == slices.Max(sc.Ws) {
				beside = twin
			}
			r, err := p.timeRound(ctx, c, fmt.Sprintf("W=%d C=%d", w, c), &roundErrs, beside)
			if r != nil {
				run.Rounds = append(run.Rounds, r)
				if r.twin != nil {
					run.Twins = append(run.Twins, Twin{W: w, C: c, Rounds: []*Round{r.twin}})
				}
			}
			if err != nil {
				return err
			}
		}
	}
	for tool, dir := range map[string]string{"strace": cfg.straceDir, "perf": cfg.perfDir} {
		if dir != "" {
			roundErrs = append(roundErrs, p.profile(ctx, tool, dir))
		}
	}
	// Peak RSS, at the largest W: untimed, each plugin under the helper.
	p.cni.rss.Store(true)
	defer p.cni.rss.Store(false)
	return errors.Join(append(roundErrs, p.lifecycles(ctx, "rss", rssLifecycles))...)
}

// timeRound times a round of c callers once the machine is quiet
// (quietRound); what names it in the progress line and in errors. With a
// twin, the twin's calls are interleaved with the round's (rounds) and
// its round is r.twin. Failed calls are counted in the round and added to
// errs: only an interrupt, or no round at all, ends the run.
func (p *pluginBench) timeRound(ctx context.Context, c int, what string, errs *[]error, twin *pluginBench) (*Round, error) {
	ps := []*pluginBench{p}
	if twin != nil {
		ps = append(ps, twin)
	}
	r, err := quietRound(ctx, &p.cfg.retryLeft, func() (*Round, error) {
		rs, err := rounds(ctx, c, ps...)
		if len(rs) > 1 {
			rs[0].twin = rs[1]
		}
		return rs[0], err
	})
	if r == nil {
		return nil, err
	}
	if t := r.twin; t != nil {
		t.SettleMS, t.Idle, t.Steal, t.StealDropped = r.SettleMS, r.Idle, r.Steal, r.StealDropped
	}
	if err != nil {
		err = fmt.Errorf("%s: %w", what, err)
		*errs = append(*errs, err)
		progress("  %s: %v", p.sc.Name, err)
	}
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	line := func(what string, r *Round) {
		progress("  %s: %s  ADD p50 %.2f ms  CHECK p50 %.2f ms  DEL p50 %.2f ms  (settled %.1f s, idle %.0f %%, steal %.0f %%)", p.sc.Name, what,
			r.Verbs["ADD"].Summary.P50, r.Verbs["CHECK"].Summary.P50, r.Verbs["DEL"].Summary.P50, r.SettleMS/1000, r.Idle*100, r.Steal*100)
	}
	line(what, r)
	if r.twin != nil {
		line(twinName(r.W, r.C)+", call by call", r.twin)
	}
	return r, nil
}

// profile records, at the largest W, untimed lifecycles with every plugin
// call under strace or perf, for finding out why a target is missed.
func (p *pluginBench) profile(ctx context.Context, tool, dir string) error {
	prefix := filepath.Join(dir, fmt.Sprintf("%s-W%d", strings.NewReplacer("/", "-", "+", "-").Replace(p.sc.Name), p.live))
	p.cni.profile.Store(&profiler{tool, prefix})
	defer p.cni.profile.Store(nil)
	progress("  %s: %s of %d lifecycles into %s-*", p.sc.Name, tool, profileLifecycles, prefix)
	return p.lifecycles(ctx, tool, profileLifecycles)
}

// profileLifecycles is how many ADD/CHECK/DEL cycles -strace and -perf record.
const profileLifecycles = 3

// rssLifecycles is how many ADD/CHECK/DEL cycles record peak RSS.
const rssLifecycles = 5
