// Command bench compares netdrivers' plugins with the reference CNI
// plugins, a no-op plugin (the exec floor) and the kernel's own cost of a
// veth (the kernel floor). It drives every plugin as a runtime does
// (libcni ADD/CHECK/DEL, exec of the binaries) from inside throwaway
// "host" namespaces, and removes everything it made on every exit path.
// Run it through scripts/bench.sh.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/netdrivers/netdrivers/pkg/nettest"
)

type config struct {
	quick                    bool
	out                      string
	oursBin, refBin, noopBin string
	rusageBin                string
	pluginsRev               string
	straceDir, perfDir       string
	only                     *regexp.Regexp
	cs                       []int
	fillC                    int
	command                  string
	// retryLeft is the time left for timing again the rounds the
	// hypervisor took CPU from (settle.go): it keeps a run in its bound.
	retryLeft time.Duration
}

func (c *config) binDir(side string) string {
	switch side {
	case "ours":
		return c.oursBin
	case "ref":
		return c.refBin
	}
	return c.noopBin
}

func parseFlags() (*config, error) {
	cfg := &config{command: strings.Join(os.Args, " ")}
	only := flag.String("only", "", "run only scenarios whose name matches this regexp")
	cs := flag.String("c", "1,8", "concurrent callers per round, comma-separated")
	flag.BoolVar(&cfg.quick, "quick", false, "smoke run: small W and N, fewer scenarios, sanity checks")
	flag.StringVar(&cfg.out, "out", filepath.Join(nettest.RepoRoot(), "test", "bench", "out"), "output directory")
	flag.StringVar(&cfg.oursBin, "bin", "", "directory with our plugins (required)")
	flag.StringVar(&cfg.noopBin, "noop", "", "directory with the noop plugin (required)")
	flag.StringVar(&cfg.straceDir, "strace", "", "also record untimed lifecycles at the largest W under strace -f -C -tt -T into this directory")
	flag.StringVar(&cfg.perfDir, "perf", "", "also record untimed lifecycles at the largest W under perf record -g into this directory")
	flag.StringVar(&cfg.pluginsRev, "plugins-rev", "", "the commit our plugins were built from (default: the working tree)")
	flag.StringVar(&cfg.rusageBin, "rusage", "", "the rusage helper (required)")
	flag.StringVar(&cfg.refBin, "ref", "", "directory with the reference plugins (default: build them into .cache)")
	flag.StringVar(&cfg.command, "command", cfg.command, "the command line to record in the report")
	flag.IntVar(&cfg.fillC, "fill-c", 4, "concurrent callers while filling W (untimed)")
	flag.Parse()
	if cfg.oursBin == "" || cfg.noopBin == "" || cfg.rusageBin == "" {
		return nil, errors.New("-bin, -noop and -rusage are required (scripts/bench.sh sets them)")
	}
	for _, s := range strings.Split(*cs, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || c < 1 {
			return nil, fmt.Errorf("-c: %q is not a positive number", s)
		}
		cfg.cs = append(cfg.cs, c)
	}
	if *only != "" {
		re, err := regexp.Compile(*only)
		if err != nil {
			return nil, fmt.Errorf("-only: %w", err)
		}
		cfg.only = re
	}
	for tool, dir := range map[string]string{"strace": cfg.straceDir, "perf": cfg.perfDir} {
		if dir == "" {
			continue
		}
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("-%s: %w", tool, err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("-%s: %w", tool, err)
		}
	}
	return cfg, nil
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func main() {
	cfg, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: run as root: it creates network namespaces")
		os.Exit(2)
	}
	os.Exit(run(cfg))
}

func run(cfg *config) (code int) {
	if n, err := sweepStale(); n > 0 || err != nil {
		progress("removed %d leftovers of killed benchmark runs (errors: %v)", n, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	reg := newRegistry()
	defer func() {
		// Also on panic: remove every namespace and directory, then re-panic.
		p := recover()
		if err := reg.cleanup(); err != nil {
			progress("cleanup: %v", err)
			code = max(code, 1)
		}
		if p != nil {
			panic(p)
		}
	}()
	if cfg.refBin == "" {
		var err error
		progress("building the reference plugins %s (cached in .cache/)", nettest.RefVersion)
		if cfg.refBin, err = nettest.BuildRef(); err != nil {
			progress("reference plugins: %v", err)
			return 1
		}
	}
	// Every binary runs from a copy written now: the page-cache state of a
	// binary file alone moved the user CPU of a call by 0.3-0.4 ms here (a
	// fresh copy against the same file evicted and read back, or as the
	// linker wrote it), so ours, the reference and the floor start alike.
	for _, c := range []struct {
		dir  *string
		name string
	}{{&cfg.oursBin, "ours"}, {&cfg.refBin, "ref"}, {&cfg.noopBin, "noop"}} {
		dst, err := freshCopy(*c.dir, filepath.Join(cfg.out, ".build", "run-"+c.name))
		if err != nil {
			progress("copy the %s binaries: %v", c.name, err)
			return 1
		}
		*c.dir = dst
	}
	rep := newReport(cfg)
	// A full run takes 8–11 minutes here: with 2 more for rounds timed
	// again it stays under 15. A quick run checks sanity, not speed.
	if !cfg.quick {
		cfg.retryLeft = 2 * time.Minute
	}
	var floor *Scenario
	for _, sc := range scenarios(cfg.quick) {
		if (cfg.quick && !sc.Quick) || (cfg.only != nil && !cfg.only.MatchString(sc.Name)) {
			continue
		}
		rep.Runs = append(rep.Runs, runScenario(ctx, sc, cfg, reg, rep.usage))
		if ctx.Err() != nil {
			progress("interrupted: cleaning up")
			return 130
		}
		if sc.Name == floorExec {
			floor = &sc
		}
	}
	if floor != nil {
		// Timed again at the end: the floor divides several targets, and a
		// burst of load during one timing must not move them (the lower of
		// the two is used, which makes no plugin look faster).
		floor.Name, floor.What = floorExecEnd, "the exec floor again, at the end of the run (ratios use the lower)"
		rep.Runs = append(rep.Runs, runScenario(ctx, *floor, cfg, reg, rep.usage))
		if ctx.Err() != nil {
			progress("interrupted: cleaning up")
			return 130
		}
	}
	if err := rep.finish(); err != nil {
		progress("report: %v", err)
		return 1
	}
	return rep.exitCode()
}

// runScenario runs one scenario in its own throwaway node and always
// removes that node before returning.
func runScenario(ctx context.Context, sc Scenario, cfg *config, reg *registry, u *usage) *Run {
	run := &Run{Scenario: sc.Name, Side: sc.Side, What: sc.What, Plugins: sc.Plugins, Ports: sc.Ports, Links: sc.Links}
	for _, p := range sc.Plugins {
		if _, err := os.Stat(filepath.Join(cfg.binDir(sc.Side), p)); err != nil {
			run.Status, run.Reason = "skipped", fmt.Sprintf("plugin %q not built", p)
			progress("%s: skipped: %s", sc.Name, run.Reason)
			return run
		}
	}
	progress("%s: %s", sc.Name, sc.What)
	start := time.Now()
	env, err := newHostEnv(reg, sc.Name)
	if err == nil {
		if sc.Kernel {
			err = runKernel(ctx, sc, cfg, env, run)
		} else {
			err = runPlugin(ctx, sc, cfg, env, u, run)
		}
		err = errors.Join(err, env.close())
	}
	run.Seconds = time.Since(start).Seconds()
	run.Status = "ok"
	if err != nil {
		run.Status, run.Reason = "failed", err.Error()
		progress("%s: FAILED: %v", sc.Name, err)
	}
	return run
}

// freshCopy copies the regular files of dir into dst, emptied first, and
// returns dst.
func freshCopy(dir, dst string) (string, error) {
	if err := os.RemoveAll(dst); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return "", err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, 0o755); err != nil {
			return "", err
		}
	}
	return dst, nil
}
