//go:build runtimes

package runtimes

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// envRecorder names the recorder binary (./recorder) the script built.
const envRecorder = "ND_RT_RECORDER"

// call is one plugin invocation as ./recorder logged it.
type call struct {
	Plugin   string            `json:"plugin"`
	Env      map[string]string `json:"env"`
	Stdin    string            `json:"stdin"`
	Stdout   string            `json:"stdout"`
	Stderr   string            `json:"stderr"`
	Exit     int               `json:"exit"`
	Start    time.Time         `json:"start"`
	Duration time.Duration     `json:"duration"`
	Caller   string            `json:"caller"`
}

func (c call) verb() string  { return c.Env["CNI_COMMAND"] }
func (c call) id() string    { return c.Env["CNI_CONTAINERID"] }
func (c call) netns() string { return c.Env["CNI_NETNS"] }

// hasPrevResult reports whether the config on stdin carried a prevResult.
func (c call) hasPrevResult() bool {
	var conf map[string]json.RawMessage
	if json.Unmarshal([]byte(c.Stdin), &conf) != nil {
		return false
	}
	p, ok := conf["prevResult"]
	return ok && string(p) != "null"
}

func (c call) String() string {
	return fmt.Sprintf("%s %s id=%.12s ifname=%s netns=%q args=%q prevResult=%v exit=%d caller=%.60q stdout=%.300s stderr=%.300s",
		c.Plugin, c.verb(), c.id(), c.Env["CNI_IFNAME"], c.netns(), c.Env["CNI_ARGS"], c.hasPrevResult(), c.Exit, c.Caller, c.Stdout, c.Stderr)
}

// recorded is a runtime's CNI bin dir of recorders and their log.
type recorded struct {
	binDir string
	log    string
	env    []string // for the runtime: where the real plugins and the log are
}

// newRecorded makes a bin dir holding a recorder under the name of every
// built plugin (loopback included): the runtime execs them as it would
// the plugins, and they exec the real ones, changing nothing.
func newRecorded(t *testing.T, name string) *recorded {
	t.Helper()
	rec := os.Getenv(envRecorder)
	if rec == "" {
		t.Fatalf("%s is not set", envRecorder)
	}
	r := &recorded{binDir: dir(t, name, "cni-bin"), log: filepath.Join(work, name, "calls.jsonl")}
	ents, err := os.ReadDir(binDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if err := os.Link(rec, filepath.Join(r.binDir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	r.env = []string{"ND_RT_REAL_BIN=" + binDir, "ND_RT_RECORD=" + r.log}
	return r
}

// calls returns every invocation so far.
func (r *recorded) calls(t *testing.T) []call {
	t.Helper()
	f, err := os.Open(r.log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []call
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var c call
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("recorder log %s: %v", r.log, err)
		}
		out = append(out, c)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// of returns the calls of verb for container id (any plugin if plugin is "").
func of(calls []call, plugin, verb, id string) []call {
	var out []call
	for _, c := range calls {
		if c.verb() == verb && c.id() == id && (plugin == "" || c.Plugin == plugin) {
			out = append(out, c)
		}
	}
	return out
}

// dump logs the calls for container id (for a failing test).
func (r *recorded) dump(t *testing.T, id string) {
	t.Helper()
	for _, c := range r.calls(t) {
		if id == "" || c.id() == id {
			t.Log(c.String())
		}
	}
}

// since returns the calls that started at or after t0.
func since(calls []call, t0 time.Time) []call {
	var out []call
	for _, c := range calls {
		if !c.Start.Before(t0) {
			out = append(out, c)
		}
	}
	return out
}

// wantCleanSince asserts that every plugin call since t0 succeeded (but
// the ADDs refused are expected to refuse) and that every attachment
// added since then was deleted again (what a runtime's teardown must
// achieve).
func (r *recorded) wantCleanSince(t *testing.T, t0 time.Time, refused ...string) {
	t.Helper()
	type att struct{ plugin, id, ifname string }
	open := map[att]bool{}
	var bad []string
	for _, c := range since(r.calls(t), t0) {
		if c.Exit != 0 && !(c.verb() == "ADD" && contains(refused, c.id())) {
			bad = append(bad, "failed: "+c.String())
		}
		a := att{c.Plugin, c.id(), c.Env["CNI_IFNAME"]}
		switch c.verb() {
		case "ADD":
			open[a] = true
		case "DEL":
			delete(open, a)
		}
	}
	for a := range open {
		bad = append(bad, fmt.Sprintf("ADD without DEL: %s %.12s %s", a.plugin, a.id, a.ifname))
	}
	if len(bad) > 0 {
		t.Errorf("plugin calls:\n%s", strings.Join(bad, "\n"))
	}
}
