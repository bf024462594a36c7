package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/netdrivers/netdrivers/pkg/nettest"
	"github.com/netdrivers/netdrivers/pkg/state"
)

// runner drives plugins as a runtime does (libcni: result cache, chains,
// prevResult), execing every binary from a thread inside the scenario's
// host namespace, which the plugin then treats as the node. It records
// the CPU time of each invocation from wait4's rusage (which covers the
// children the plugin waited for: delegated IPAM, iptables). With rss
// set, it runs each plugin under the rusage helper to record its peak
// RSS instead (see test/bench/rusage: wait4's own number would include
// the benchmark's memory).
type runner struct {
	*libcni.CNIConfig
	host   *nettest.NS
	env    []string
	side   string
	usage  *usage
	rusage string // path of the rusage helper
	rss    atomic.Bool
	// profile, when set, runs each plugin call under a profiler writing
	// into its own file.
	profile atomic.Pointer[profiler]
	calls   atomic.Int64
	cpu     atomic.Int64 // ns of user+sys time of every exec since the last takeCPU
}

// takeCPU returns the CPU time the plugins used since the last call.
func (r *runner) takeCPU() time.Duration { return time.Duration(r.cpu.Swap(0)) }

func newRunner(host *nettest.NS, cfg *config, side, cacheDir, stateDir string, u *usage) *runner {
	r := &runner{host: host, side: side, usage: u, rusage: cfg.rusageBin,
		env: []string{state.EnvRoot + "=" + stateDir}}
	r.CNIConfig = libcni.NewCNIConfigWithCacheDir([]string{cfg.binDir(side)}, cacheDir, r)
	return r
}

// ExecPlugin implements invoke.Exec.
func (r *runner) ExecPlugin(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	key := usageKey{r.side, filepath.Base(path), verbOf(environ)}
	cmd := exec.CommandContext(ctx, path)
	var report, w *os.File
	if r.rss.Load() {
		var err error
		if report, w, err = os.Pipe(); err != nil {
			return nil, err
		}
		defer report.Close()
		cmd = exec.CommandContext(ctx, r.rusage, path)
		cmd.ExtraFiles = []*os.File{w}
	} else if prof := r.profile.Load(); prof != nil {
		out := fmt.Sprintf("%s-%s-%s-%d.%s", prof.prefix, key.Verb, key.Plugin, r.calls.Add(1), prof.tool)
		cmd = exec.CommandContext(ctx, prof.tool, append(profileArgs[prof.tool], out, path)...)
	}
	cmd.Env = append(environ, r.env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(stdin), &stdout, &stderr
	// The child inherits the namespace of the thread that forks it.
	err := r.host.Do(cmd.Start)
	if w != nil {
		w.Close() // the child holds its own copy; EOF once it exits
	}
	if err == nil {
		err = cmd.Wait()
	}
	if report != nil && cmd.ProcessState != nil {
		r.usage.addRSS(key, report)
	} else if ps := cmd.ProcessState; ps != nil {
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
			cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			r.usage.addCPU(key, cpu)
			r.cpu.Add(int64(cpu))
		}
	}
	if err != nil {
		return nil, pluginErr(path, err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

// profiler names a profiling tool and the prefix of its output files.
type profiler struct{ tool, prefix string }

// profileArgs precede "OUTPUT PLUGIN" for each tool: strace keeps the
// trace with timings and a syscall summary; perf samples user and kernel
// stacks (the plugins must be built unstripped for Go symbols).
var profileArgs = map[string][]string{
	"strace": {"-f", "-C", "-tt", "-T", "-o"},
	"perf":   {"record", "-q", "-g", "-e", "cpu-clock", "-F", "20000", "-o"},
}

// FindInPath implements invoke.Exec.
func (r *runner) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

// Decode implements invoke.Exec.
func (r *runner) Decode(b []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(b)
}

func verbOf(env []string) string {
	v := ""
	for _, e := range env {
		if val, ok := strings.CutPrefix(e, "CNI_COMMAND="); ok {
			v = val
		}
	}
	return v
}

func pluginErr(path string, err error, stdout, stderr []byte) error {
	var e types.Error
	if json.Unmarshal(stdout, &e) == nil && (e.Code != 0 || e.Msg != "") {
		return fmt.Errorf("%s: %w", filepath.Base(path), &e)
	}
	return fmt.Errorf("%s: %w: stdout %q stderr %q", filepath.Base(path), err, stdout, stderr)
}

// usageKey names one plugin binary of one side under one verb.
type usageKey struct{ Side, Plugin, Verb string }

// usage collects per-invocation resource use.
type usage struct {
	mu      sync.Mutex
	rss     map[usageKey][]int64 // KiB
	cpu     map[usageKey][]time.Duration
	floor   int64 // largest peak RSS of the rusage helper itself
	badRSS  int   // reports that could not be read
	lastErr string
}

func newUsage() *usage {
	return &usage{rss: map[usageKey][]int64{}, cpu: map[usageKey][]time.Duration{}}
}

func (u *usage) addCPU(k usageKey, cpu time.Duration) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.cpu[k] = append(u.cpu[k], cpu)
}

// addRSS reads the rusage helper's report: the plugin's peak RSS and the
// helper's own, both KiB.
func (u *usage) addRSS(k usageKey, report io.Reader) {
	var rss, self int64
	_, err := fmt.Fscan(report, &rss, &self)
	u.mu.Lock()
	defer u.mu.Unlock()
	if err != nil {
		u.badRSS++
		u.lastErr = err.Error()
		return
	}
	u.rss[k] = append(u.rss[k], rss)
	u.floor = max(u.floor, self)
}

// UsageRow is the resource use of one plugin binary under one verb.
type UsageRow struct {
	Side     string  `json:"side"`
	Plugin   string  `json:"plugin"`
	Verb     string  `json:"verb"`
	Calls    int     `json:"calls"`
	RSSCalls int     `json:"rss_calls"` // calls run under the rusage helper
	RSSP50   int64   `json:"rss_p50_kib"`
	RSSMax   int64   `json:"rss_max_kib"`
	CPUP50MS float64 `json:"cpu_p50_ms"` // user+sys, children included
}

func (u *usage) rows() []UsageRow {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []UsageRow
	for k, cpu := range u.cpu {
		cpu = slices.Clone(cpu)
		slices.Sort(cpu)
		row := UsageRow{Side: k.Side, Plugin: k.Plugin, Verb: k.Verb, Calls: len(cpu), CPUP50MS: ms(percentile(cpu, 50))}
		if r := slices.Clone(u.rss[k]); len(r) > 0 {
			slices.Sort(r)
			row.RSSCalls, row.RSSP50, row.RSSMax = len(r), r[(len(r)-1)/2], r[len(r)-1]
		}
		out = append(out, row)
	}
	slices.SortFunc(out, func(a, b UsageRow) int {
		return strings.Compare(a.Side+a.Plugin+verbRank(a.Verb), b.Side+b.Plugin+verbRank(b.Verb))
	})
	return out
}

// verbRank orders verbs as a lifecycle runs them.
func verbRank(v string) string {
	return map[string]string{"ADD": "1", "CHECK": "2", "DEL": "3"}[v] + v
}
