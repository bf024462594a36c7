package test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/nettest"
	"github.com/netdrivers/netdrivers/pkg/safefile"
	"github.com/netdrivers/netdrivers/pkg/state"
)

// The crash suite (issue 8): each plugin is killed with SIGKILL at many
// moments during ADD, and during DEL; then DEL, and separately GC, must
// leave the node exactly as it was before the ADD: links, addresses,
// routes, policy rules, both packet filters, the address store, the state
// files and the mounts. After every kill the store and the state files
// must still be readable.
//
// The moments are black-box: each variant first times a whole ADD (and a
// whole DEL) on this machine, then kills at evenly spread fractions of it.
// Where no kill happened to land inside the work (the node changed and
// the process did not finish), more moments are bisected between the last
// kill that changed nothing and the first that came too late.

// crashVariant is one plugin configuration under test.
type crashVariant struct {
	name, plugin string
	extra        map[string]any
	keeper       bool // an attachment stays for the whole test (GC's valid one)
	multiStep    bool // ADD has enough steps that some kill must land inside
}

var crashVariants = []crashVariant{
	{"none", "none", nil, false, false},
	{"host-local-bridge/nftables", "host-local-bridge", map[string]any{"firewallBackend": "nftables"}, true, true},
	{"host-local-bridge/iptables", "host-local-bridge", map[string]any{"firewallBackend": "iptables"}, true, true},
	{"macvlan", "macvlan", nil, true, true},
	{"macvlan/shim", "macvlan", map[string]any{"hostShim": true}, false, true},
	{"hostns", "hostns", nil, false, false},
	{"joinns", "joinns", nil, false, false},
}

// crashPorts are the port mappings of every ADD that takes them.
var crashPorts = []map[string]any{
	{"hostPort": 18090, "containerPort": 80, "protocol": "tcp"},
	{"hostPort": 18090, "containerPort": 80, "protocol": "udp"},
}

// crashRun is one variant on its own node.
type crashRun struct {
	*hsNode
	v      crashVariant
	conf   map[string]any
	keeper map[string]string // the keeper's env, nil without one
	before string
	out    map[string]int // outcomes of the kills
}

func newCrashRun(t *testing.T, v crashVariant) *crashRun {
	t.Helper()
	n := newHsNode(t)
	extra := map[string]any{"runtimeConfig": map[string]any{"portMappings": crashPorts}}
	for k, val := range v.extra {
		extra[k] = val
	}
	if v.plugin != "host-local-bridge" && v.plugin != "hostns" {
		delete(extra, "runtimeConfig") // joinns refuses ports; the others ignore them
	}
	r := &crashRun{hsNode: n, v: v, conf: n.conf(v.plugin, extra), out: map[string]int{}}
	if v.keeper {
		keep := n.conf(v.plugin, v.extra) // no ports: the killed ADDs take them
		_, r.keeper, _ = n.attach(t, v.plugin, keep)
	} else if v.plugin != "none" && v.plugin != "joinns" {
		n.warmConf(t, v.plugin, r.conf)
	}
	r.before = r.state(t, nil)
	return r
}

// state is everything the crash must not change: the node, the store and
// state files (contents), and the mounts on the container's path, which
// hostns and joinns re-bind (and then the runtime removes): it shows its
// own namespace or the target, never nothing.
func (r *crashRun) state(t *testing.T, cont *nettest.NS) string {
	t.Helper()
	s := r.full(t)
	if cont != nil {
		if got := nettest.Mounts(t, cont.Path()); len(got) != 1 || !strings.Contains(got[0], " nsfs ") {
			s += fmt.Sprintf("\ncontainer path mounts: %v", got)
		}
	}
	return s
}

// launch starts one plugin call with conf and env, from the node.
func (r *crashRun) launch(t *testing.T, env map[string]string) *exec.Cmd {
	t.Helper()
	stdin, err := json.Marshal(r.conf)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(nettest.Bins(t), r.v.plugin))
	cmd.Env = append(os.Environ(), state.EnvRoot+"="+r.cni.StateDir)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdin = bytes.NewReader(stdin)
	r.host.MustDo(t, func() error { return cmd.Start() })
	return cmd
}

// killAfter runs one call and SIGKILLs it after d. It reports whether the
// call ran to its end (so the kill came too late).
func (r *crashRun) killAfter(t *testing.T, env map[string]string, d time.Duration) (finished bool) {
	t.Helper()
	cmd := r.launch(t, env)
	time.Sleep(d) // the point: land the kill at a chosen moment
	cmd.Process.Kill()
	err := cmd.Wait()
	var ee *exec.ExitError
	return !errors.As(err, &ee) || ee.ExitCode() != -1
}

// timeCall is the median wall time of three complete calls of verb (ADD
// then DEL of fresh containers).
func (r *crashRun) timeCall(t *testing.T, verb string) time.Duration {
	t.Helper()
	var ds []time.Duration
	for range 3 {
		cont := nettest.NewNS(t)
		env := r.env(t, "ADD", cont)
		for _, v := range []string{"ADD", "DEL"} {
			env["CNI_COMMAND"] = v
			start := time.Now()
			if err := r.launch(t, env).Wait(); err != nil {
				t.Fatalf("%s of %s for timing: %v", v, r.v.name, err)
			}
			if v == verb {
				ds = append(ds, time.Since(start))
			}
		}
		cont.Remove()
	}
	slices.Sort(ds)
	return ds[1]
}

// moments spreads count kill moments over [0, 1.2*d].
func moments(d time.Duration, count int) []time.Duration {
	out := make([]time.Duration, count)
	for i := range out {
		out[i] = time.Duration(int64(d) * 12 * int64(i) / int64(10*(count-1)))
	}
	return out
}

// cleanup undoes whatever a killed call left: DEL as a runtime without a
// cached result sends it, or GC with only the keeper valid.
func (r *crashRun) cleanup(t *testing.T, how string, env map[string]string) {
	t.Helper()
	if how == "DEL" {
		del := withKey(env, "CNI_COMMAND", "DEL")
		if _, err := r.exec(t, r.v.plugin, r.conf, del); err != nil {
			t.Errorf("DEL after the kill: %v", err)
		}
		return
	}
	valid := []any{}
	if r.keeper != nil {
		valid = append(valid, map[string]string{"containerID": r.keeper["CNI_CONTAINERID"], "ifname": "eth0"})
	}
	conf := withKey(r.conf, "cni.dev/valid-attachments", any(valid))
	if _, err := r.exec(t, r.v.plugin, conf, map[string]string{"CNI_COMMAND": "GC", "CNI_PATH": nettest.Bins(t)}); err != nil {
		t.Errorf("GC after the kill: %v", err)
	}
}

// withKey copies m with k set to v.
func withKey[V any](m map[string]V, k string, v V) map[string]V {
	out := make(map[string]V, len(m)+1)
	for key, val := range m {
		out[key] = val
	}
	out[k] = v
	return out
}

// readable fails t unless every state file is valid JSON (or the boot
// marker) and every address entry holds a container ID line: a kill
// never leaves a torn or empty file that the next call cannot read.
func (r *crashRun) readable(t *testing.T, when string) {
	t.Helper()
	filepath.WalkDir(r.cni.StateDir, func(p string, d fs.DirEntry, err error) error {
		// Temporaries are never read (a kill between write and rename
		// leaves one; the leak check counts those).
		if err != nil || d.IsDir() || strings.Contains(p, "/locks/") || filepath.Base(p) == "boot_id" || safefile.IsTemp(d.Name()) {
			return nil
		}
		data, _ := os.ReadFile(p)
		if !json.Valid(data) {
			t.Errorf("%s: state file %s is not JSON: %q", when, p, data)
		}
		return nil
	})
	for _, e := range storeFiles(t, r.dataDir) {
		data, _ := os.ReadFile(e)
		if id, _, _ := strings.Cut(string(data), "\n"); strings.TrimSpace(id) == "" {
			t.Errorf("%s: address entry %s holds no container ID: %q", when, e, data)
		}
	}
}

// storeFiles lists the address entries under dataDir (every network).
func storeFiles(t *testing.T, dataDir string) []string {
	var out []string
	dirs, _ := os.ReadDir(dataDir)
	for _, d := range dirs {
		for _, e := range nettest.StoreEntries(t, filepath.Join(dataDir, d.Name())) {
			out = append(out, filepath.Join(dataDir, d.Name(), e))
		}
	}
	sort.Strings(out)
	return out
}

// afterCleanup checks the node is as before, and the container holds no
// interface of the plugin and its path a namespace.
func (r *crashRun) afterCleanup(t *testing.T, cont *nettest.NS, what string) {
	t.Helper()
	if d := stableDiff(r.before, r.state(t, cont)); d != "" {
		t.Errorf("%s: the node differs from before the ADD:\n%s", what, d)
	}
	switch r.v.plugin {
	case "host-local-bridge", "macvlan":
		if nettest.HasLink(t, cont, "eth0") {
			t.Errorf("%s: eth0 left in the container", what)
		}
	case "hostns", "joinns":
		if _, err := netns.IDOf(cont.Path()); err != nil {
			t.Errorf("%s: the container path shows no namespace: %v", what, err)
		}
	}
}

// TestCrash kills every plugin variant at spread moments of ADD, then of
// DEL, and cleans up with DEL (as a runtime without a cached result) or
// GC, checking the node after each.
func TestCrash(t *testing.T) {
	nettest.RequireRoot(t)
	for _, v := range crashVariants {
		for _, how := range []string{"DEL", "GC"} {
			t.Run(v.name+"/"+how, func(t *testing.T) {
				t.Parallel()
				r := newCrashRun(t, v)
				r.killAdds(t, how, r.timeCall(t, "ADD"))
				r.killDels(t, how, r.timeCall(t, "DEL"))
				t.Logf("kills: %v", r.out)
				// The store and the state still serve a whole lifecycle.
				cont, env, _ := r.attach(t, v.plugin, r.conf)
				r.detach(t, v.plugin, r.conf, env)
				r.afterCleanup(t, cont, "a lifecycle after the kills")
			})
		}
	}
}

// killAdds kills ADD at moments spread over its time d; for a multi-step
// ADD it tries more moments until one lands inside the work.
func (r *crashRun) killAdds(t *testing.T, how string, d time.Duration) {
	t.Helper()
	early, late := time.Duration(0), time.Duration(-1)
	for _, m := range moments(d, 8) {
		switch r.killAdd(t, how, m) {
		case "early":
			early = max(early, m)
		case "late":
			if late < 0 || m < late {
				late = m
			}
		}
	}
	// Then random moments between the latest early and the earliest late
	// kill: on a loaded machine start-up jitter is larger than ADD's own
	// few milliseconds, and a bisection can step past them.
	for i := 0; r.v.multiStep && r.out["ADD inside"] == 0 && i < 24; i++ {
		lo, hi := early, late
		if hi <= lo {
			lo, hi = 0, d*3/2 // the jitter crossed them: the whole call again
		}
		m := lo + time.Duration(rand.Int64N(int64(hi-lo)+1))
		switch r.killAdd(t, how, m) {
		case "early":
			early = max(early, m)
		case "late":
			if late < 0 || m < late {
				late = m
			}
		}
	}
	if r.v.multiStep && r.out["ADD inside"] == 0 {
		t.Errorf("no kill landed inside ADD (kills %v, ADD takes %v)", r.out, d)
	}
}

// killAdd kills one ADD after d, checks the files are readable, cleans up
// and checks the node. It returns where the kill landed: "early" (nothing
// changed yet), "inside" or "late" (ADD had finished).
func (r *crashRun) killAdd(t *testing.T, how string, d time.Duration) string {
	t.Helper()
	quick := r.quick(t, nil)
	cont := nettest.NewNS(t)
	defer cont.Remove()
	id := cont.Handle().ID()
	env := r.env(t, "ADD", cont)
	where := "inside"
	if r.killAfter(t, env, d) {
		where = "late"
	} else if stableDiff(quick, r.quick(t, nil)) == "" && !nettest.HasLink(t, cont, "eth0") && hnNSID(t, cont.Path()) == id {
		where = "early"
	}
	r.out["ADD "+where]++
	r.readable(t, fmt.Sprintf("after a kill at %v of ADD", d))
	r.cleanup(t, how, env)
	r.afterCleanup(t, cont, fmt.Sprintf("kill at %v of ADD (%s), then %s", d, where, how))
	return where
}

// killDels attaches, kills DEL at moments spread over its time d, and
// finishes the teardown with DEL or GC.
func (r *crashRun) killDels(t *testing.T, how string, d time.Duration) {
	t.Helper()
	for _, m := range moments(d, 5) {
		cont, env, _ := r.attach(t, r.v.plugin, r.conf)
		where := "inside"
		if r.killAfter(t, withKey(env, "CNI_COMMAND", "DEL"), m) {
			where = "late"
		}
		r.out["DEL "+where]++
		r.readable(t, fmt.Sprintf("after a kill at %v of DEL", m))
		r.cleanup(t, how, env)
		r.afterCleanup(t, cont, fmt.Sprintf("kill at %v of DEL, then %s", m, how))
		cont.Remove()
	}
}
