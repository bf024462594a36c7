package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// Report is everything a run produced; it is written as results.json.
type Report struct {
	Meta  Meta       `json:"meta"`
	Runs  []*Run     `json:"runs"`
	Usage []UsageRow `json:"usage"`
	// RSSFloor is the rusage helper's own peak RSS: a plugin measured at
	// or below it was smaller than this and is reported as this.
	RSSFloor int64    `json:"rss_floor_kib"`
	Ratios   []Ratio  `json:"ratios"`
	Targets  []Target `json:"targets"`
	Sanity   []string `json:"sanity_failures,omitempty"`

	cfg   *config
	usage *usage
	start time.Time
}

// Meta says under what conditions the numbers were taken.
type Meta struct {
	Started    time.Time `json:"started"`
	Seconds    float64   `json:"seconds"`
	Command    string    `json:"command"`
	Quick      bool      `json:"quick"`
	Host       string    `json:"host"`
	Kernel     string    `json:"kernel"`
	CPUs       int       `json:"cpus"`
	Go         string    `json:"go"`
	Commit     string    `json:"commit"`
	PluginsRev string    `json:"plugins_rev"` // what our plugins were built from
	RefVersion string    `json:"ref_version"`
	LoadBefore string    `json:"loadavg_before"`
	LoadAfter  string    `json:"loadavg_after"`
	Callers    []int     `json:"callers"`
}

func newReport(cfg *config) *Report {
	var u unix.Utsname
	unix.Uname(&u)
	return &Report{cfg: cfg, usage: newUsage(), start: time.Now(), Meta: Meta{
		Started: time.Now().UTC(), Command: cfg.command, Quick: cfg.quick,
		Host: unix.ByteSliceToString(u.Nodename[:]), Kernel: unix.ByteSliceToString(u.Release[:]),
		CPUs: runtime.NumCPU(), Go: runtime.Version(), Commit: gitCommit(), PluginsRev: cmp.Or(cfg.pluginsRev, "working tree"), RefVersion: nettest.RefVersion,
		LoadBefore: loadavg(), Callers: cfg.cs,
	}}
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func gitCommit() string {
	out, err := exec.Command("git", "-C", nettest.RepoRoot(), "describe", "--always", "--dirty").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

// finish computes ratios and targets and writes results.json, report.md
// and plot.svg into a fresh directory under the output directory, which
// "latest" (a full run) or "latest-quick" then points to.
func (r *Report) finish() error {
	r.Meta.Seconds = time.Since(r.start).Seconds()
	r.Meta.LoadAfter = loadavg()
	r.Usage = r.usage.rows()
	r.RSSFloor = r.usage.floor
	if r.usage.badRSS > 0 {
		r.Sanity = append(r.Sanity, fmt.Sprintf("%d rusage reports unreadable, last: %s", r.usage.badRSS, r.usage.lastErr))
	}
	r.Ratios = r.ratios()
	r.Targets = r.targets()
	r.Sanity = append(r.Sanity, r.sanity()...)
	name := time.Now().Format("20060102-150405")
	if r.cfg.quick {
		name += "-quick"
	}
	dir := filepath.Join(r.cfg.out, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(r, "", " ")
	if err != nil {
		return err
	}
	md := r.markdown()
	files := map[string][]byte{"results.json": js, "report.md": []byte(md), "plot.svg": []byte(r.plot())}
	for f, b := range files {
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			return err
		}
	}
	latest := filepath.Join(r.cfg.out, "latest")
	if r.cfg.quick {
		latest += "-quick" // a smoke run never replaces the full run --publish takes
	}
	os.Remove(latest)
	if err := os.Symlink(name, latest); err != nil {
		return err
	}
	fmt.Print(md)
	for _, s := range r.Sanity {
		progress("sanity check failed: %s", s)
	}
	progress("wrote %s (results.json, report.md, plot.svg) in %.0f s", dir, r.Meta.Seconds)
	return nil
}

// exitCode is 1 when a scenario failed or, in a quick run, a sanity
// check did.
func (r *Report) exitCode() int {
	for _, run := range r.Runs {
		if run.Status == "failed" {
			return 1
		}
	}
	if len(r.Sanity) > 0 {
		return 1
	}
	return 0
}

// fmtMS prints a latency with about three significant digits.
func fmtMS(v float64) string {
	switch {
	case math.IsNaN(v) || v == 0:
		return "–"
	case v < 10:
		return fmt.Sprintf("%.2f", v)
	case v < 100:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func fmtX(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case v < 10:
		return fmt.Sprintf("%.2f×", v)
	}
	return fmt.Sprintf("%.1f×", v)
}

func (r *Report) markdown() string {
	var b strings.Builder
	m := r.Meta
	fmt.Fprintf(&b, "Run %s, %s, kernel %s, %d CPUs, %s, checkout %s, our plugins from %s, reference plugins %s; %.0f s; load average before %s, after %s.\n\n",
		m.Started.Format(time.RFC3339), m.Host, m.Kernel, m.CPUs, m.Go, m.Commit, m.PluginsRev, m.RefVersion, m.Seconds, m.LoadBefore, m.LoadAfter)
	fmt.Fprintf(&b, "Command: `%s`\n\n", m.Command)
	b.WriteString("Latency in ms of one whole libcni call (exec of every plugin in the list), p50 / p90 / p99 / max, and the calls per second that C callers achieved.")
	b.WriteString(settleLine(r))
	b.WriteString("\n\n")
	b.WriteString("| scenario | W | C | ADD | ADD/s | CHECK | CHECK/s | DEL | DEL/s |\n|---|--:|--:|---|--:|---|--:|---|--:|\n")
	row := func(name string, rd *Round) {
		fmt.Fprintf(&b, "| %s | %d | %d", name, rd.W, rd.C)
		for _, verb := range Verbs {
			v, ok := rd.Verbs[verb]
			if !ok {
				b.WriteString(" | – | –")
				continue
			}
			s := v.Summary
			failed := ""
			if s.Errors > 0 {
				failed = fmt.Sprintf(" (**%d failed**)", s.Errors)
			}
			fmt.Fprintf(&b, " | %s / %s / %s / %s%s | %.0f", fmtMS(s.P50), fmtMS(s.P90), fmtMS(s.P99), fmtMS(s.Max), failed, s.OpsPS)
		}
		b.WriteString(" |\n")
	}
	for _, run := range r.Runs {
		for _, rd := range run.Rounds {
			row(run.Scenario, rd)
		}
		for _, tw := range run.Twins {
			for _, rd := range tw.Rounds {
				row(fmt.Sprintf("%s, empty twin, call by call with W=%d", run.Scenario, tw.W), rd)
			}
		}
	}
	b.WriteString("\nScenarios:\n\n")
	for _, run := range r.Runs {
		line := fmt.Sprintf("- `%s`: %s", run.Scenario, run.What)
		switch run.Status {
		case "skipped":
			line += fmt.Sprintf(" — **skipped**: %s", run.Reason)
		case "failed":
			line += fmt.Sprintf(" — **failed**: %s", firstLine(run.Reason))
		}
		for _, f := range run.Fill {
			line += fmt.Sprintf("; fill to W=%d took %.0f s", f.W, f.Seconds)
			if f.FailedADDs > 0 {
				line += fmt.Sprintf(" (**%d ADDs failed and were retried, %d never came up**, first: %s)", f.FailedADDs, f.Missing, firstLine(f.FirstError))
			}
		}
		if len(run.Probes) > 1 {
			var ps []string
			for _, p := range run.Probes {
				ps = append(ps, fmt.Sprintf("%s ms at W=%d", fmtMS(p.P50), p.W))
			}
			line += "; exec floor in this node " + strings.Join(ps, ", ")
		}
		b.WriteString(line + "\n")
	}
	r.cpuMarkdown(&b)
	r.ratioMarkdown(&b)
	r.usageMarkdown(&b)
	r.targetMarkdown(&b)
	if len(r.Sanity) > 0 {
		b.WriteString("\nSanity check failures:\n\n")
		for _, s := range r.Sanity {
			fmt.Fprintf(&b, "- %s\n", s)
		}
	}
	return b.String()
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	if len(l) > 300 {
		l = l[:300] + "…"
	}
	return l
}

// cpuMarkdown shows the CPU time per call at each W (C=1): work that
// grows with W shows here even when the machine is busy.
func (r *Report) cpuMarkdown(b *strings.Builder) {
	b.WriteString("\nCPU time per call, C=1 (ms, user + sys of every process of the call, mean):\n\n| scenario | W | ADD | CHECK | DEL |\n|---|--:|--:|--:|--:|\n")
	for _, run := range r.Runs {
		for _, rd := range run.Rounds {
			if rd.C != 1 || run.Scenario == "floor/kernel" {
				continue
			}
			fmt.Fprintf(b, "| %s | %d", run.Scenario, rd.W)
			for _, verb := range Verbs {
				v := math.NaN()
				if vr, ok := rd.Verbs[verb]; ok {
					v = vr.CPUMeanMS
				}
				b.WriteString(" | " + fmtMS(v))
			}
			b.WriteString(" |\n")
		}
	}
}

func (r *Report) usageMarkdown(b *strings.Builder) {
	fmt.Fprintf(b, "\nPer invocation: CPU time (user + sys, with the children it waited for) p50 over the timed calls; "+
		"peak RSS (KiB) of the process tree, p50 / max over %d untimed lifecycles at the largest W, each plugin forked from the "+
		"rusage helper (whose own %d KiB is the smallest number it can report):\n\n", rssLifecycles, r.RSSFloor)
	b.WriteString("| side | plugin | verb | timed calls | CPU p50 ms | RSS p50 | RSS max |\n|---|---|---|--:|--:|--:|--:|\n")
	for _, u := range r.Usage {
		fmt.Fprintf(b, "| %s | %s | %s | %d | %s | %d | %d |\n", u.Side, u.Plugin, u.Verb, u.Calls, fmtMS(u.CPUP50MS), u.RSSP50, u.RSSMax)
	}
}

// settleLine says how the rounds waited for a quiet machine.
func settleLine(r *Report) string {
	var waits []float64
	capped := 0
	for _, run := range r.Runs {
		run.eachRound(func(_ string, rd *Round) {
			waits = append(waits, rd.SettleMS/1000)
			if rd.Idle < settleIdle {
				capped++
			}
		})
	}
	if len(waits) == 0 {
		return ""
	}
	sort.Float64s(waits)
	return fmt.Sprintf(" Each round started once the CPU was %.0f %% idle over %.1f s (settle.go), after %.1f s (median) to %.1f s; %d of %d rounds started busier, at the %.0f s cap.",
		settleIdle*100, settleWindow.Seconds(), waits[len(waits)/2], waits[len(waits)-1], capped, len(waits), settleMax.Seconds()) + stealLine(r)
}

// stealLine says how much CPU time the hypervisor took during the rounds,
// and names the rounds where it took more than stealNoisy of it: their
// numbers are slower than the code.
func stealLine(r *Report) string {
	var all []float64
	var noisy []string
	again := 0
	for _, run := range r.Runs {
		run.eachRound(func(name string, rd *Round) {
			all = append(all, rd.Steal)
			if len(rd.StealDropped) > 0 {
				again++
			}
			if rd.Steal > stealNoisy {
				noisy = append(noisy, fmt.Sprintf("%s %s %.0f %%", run.Scenario, name, rd.Steal*100))
			}
		})
	}
	if len(all) == 0 {
		return ""
	}
	sort.Float64s(all)
	line := fmt.Sprintf(" The hypervisor took %.1f %% of the CPU time during a round (median), %.1f %% at most (steal, /proc/stat)",
		all[len(all)/2]*100, all[len(all)-1]*100)
	if again > 0 {
		were := "rounds over %.0f %% were"
		if again == 1 {
			were = "round over %.0f %% was"
		}
		line += fmt.Sprintf("; %d "+were+" timed again, keeping the attempt with the least steal", again, stealRetry*100)
	}
	if len(noisy) > 0 {
		return line + "; over " + fmt.Sprintf("%.0f %%", stealNoisy*100) + " in " + strings.Join(noisy, ", ") + "."
	}
	return line + "."
}

// stealNoisy is the steal share above which a round is named as noisy.
const stealNoisy = 0.05
