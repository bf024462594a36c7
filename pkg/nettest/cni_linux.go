package nettest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/netdrivers/netdrivers/pkg/state"
)

// Call is one recorded plugin invocation.
type Call struct {
	Plugin, Verb  string
	Env           []string
	Stdin, Stdout []byte
	Stderr        []byte
	Err           error
}

// CNI drives plugins exactly as a runtime does (libcni), execing them from
// a thread inside Host, which the plugins then treat as the node. Every
// test host gets its own state dir. Each call's stdout must hold at most
// one JSON document; a violation fails the test.
type CNI struct {
	*libcni.CNIConfig
	Host     *NS
	StateDir string
	Env      []string // extra environment for every plugin run
	// MaxCalls bounds what Calls keeps to the latest calls (0: all), for
	// long runs such as the soak.
	MaxCalls int

	t     testing.TB
	mu    sync.Mutex
	calls []Call
}

// NewCNI returns a libcni runner whose plugins run in host and are found
// in dirs (defaults to the built binaries).
func NewCNI(t testing.TB, host *NS, dirs ...string) *CNI {
	t.Helper()
	if len(dirs) == 0 {
		dirs = []string{Bins(t)}
	}
	c := &CNI{Host: host, StateDir: t.TempDir(), t: t}
	c.CNIConfig = libcni.NewCNIConfigWithCacheDir(dirs, t.TempDir(), c)
	return c
}

// Calls returns the invocations made so far.
func (c *CNI) Calls() []Call {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Call(nil), c.calls...)
}

// ExecPlugin implements invoke.Exec.
func (c *CNI) ExecPlugin(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	env := append(append(environ, state.EnvRoot+"="+c.StateDir), c.Env...)
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path)
	cmd.Env, cmd.Stdin, cmd.Stdout, cmd.Stderr = env, bytes.NewReader(stdin), &stdout, &stderr
	var err error
	if c.Host != nil {
		// The child inherits the namespace of the thread that forks it.
		err = c.Host.Do(func() error { return cmd.Start() })
		if err == nil {
			err = cmd.Wait()
		}
	} else {
		err = cmd.Run()
	}
	call := Call{Plugin: path, Verb: envValue(env, "CNI_COMMAND"), Env: env, Stdin: stdin,
		Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
	if n, derr := countDocs(stdout.Bytes()); derr != nil || n > 1 {
		c.t.Errorf("%s %s: stdout is not one JSON document (%d, %v): %q", path, call.Verb, n, derr, stdout.String())
	}
	if err != nil {
		call.Err = pluginErr(err, stdout.Bytes(), stderr.Bytes())
	}
	c.mu.Lock()
	c.calls = append(c.calls, call)
	if c.MaxCalls > 0 && len(c.calls) > c.MaxCalls {
		c.calls = append([]Call(nil), c.calls[len(c.calls)-c.MaxCalls:]...)
	}
	c.mu.Unlock()
	if call.Err != nil {
		return nil, call.Err
	}
	return stdout.Bytes(), nil
}

// FindInPath implements invoke.Exec.
func (c *CNI) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

// Decode implements invoke.Exec.
func (c *CNI) Decode(b []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(b)
}

func envValue(env []string, key string) string {
	v := ""
	for _, e := range env {
		if k, val, ok := strings.Cut(e, "="); ok && k == key {
			v = val
		}
	}
	return v
}

func countDocs(b []byte) (int, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	n := 0
	for {
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, err
		}
		n++
	}
}

func pluginErr(err error, stdout, stderr []byte) error {
	var e types.Error
	if len(stdout) > 0 && json.Unmarshal(stdout, &e) == nil && (e.Code != 0 || e.Msg != "") {
		return &e
	}
	return fmt.Errorf("plugin failed: %w: stdout %q stderr %q", err, stdout, stderr)
}

// Code returns the CNI error code of err (0 when err is not a CNI error).
func Code(err error) uint {
	var e *types.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// ConfList builds a network list from a JSON-marshalable value or a
// JSON string.
func ConfList(t testing.TB, v any) *libcni.NetworkConfigList {
	t.Helper()
	var b []byte
	switch x := v.(type) {
	case string:
		b = []byte(x)
	case []byte:
		b = x
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	l, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		t.Fatalf("conflist: %v\n%s", err, b)
	}
	return l
}

// Runtime is a runtime conf for a container in ns on ifname.
func Runtime(t testing.TB, ns *NS, ifname string) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: ID(t), IfName: ifname}
	if ns != nil {
		rt.NetNS = ns.Path()
	}
	return rt
}

// MustAdd runs ADD of list and fails t on error.
func (c *CNI) MustAdd(t testing.TB, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) types.Result {
	t.Helper()
	res, err := c.AddNetworkList(context.Background(), list, rt)
	if err != nil {
		t.Fatalf("ADD %s for %s: %v", list.Name, rt.ContainerID, err)
	}
	return res
}

// MustCheck runs CHECK and fails t on error.
func (c *CNI) MustCheck(t testing.TB, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) {
	t.Helper()
	if err := c.CheckNetworkList(context.Background(), list, rt); err != nil {
		t.Fatalf("CHECK %s for %s: %v", list.Name, rt.ContainerID, err)
	}
}

// MustDel runs DEL and fails t on error.
func (c *CNI) MustDel(t testing.TB, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) {
	t.Helper()
	if err := c.DelNetworkList(context.Background(), list, rt); err != nil {
		t.Fatalf("DEL %s for %s: %v", list.Name, rt.ContainerID, err)
	}
}

// Exec runs one plugin binary directly (no libcni), as a runtime that
// does not cache would: env holds CNI_* variables. Returns stdout.
func (c *CNI) Exec(t testing.TB, plugin string, stdin []byte, env map[string]string) ([]byte, error) {
	t.Helper()
	path, err := invoke.FindInPath(plugin, c.Path)
	if err != nil {
		t.Fatal(err)
	}
	environ := os.Environ()
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	return c.ExecPlugin(context.Background(), path, stdin, environ)
}
