package ipam

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
)

// Delegation execs the plugin named by "ipam.type" from CNI_PATH with the
// plugin's own stdin and environment (CNI_COMMAND replaced), as the
// reference plugins' ipam.Exec* do. Errors the delegate prints keep its
// code; a delegate that cannot be found is a config error (code 7).

func delegateAdd(ctx context.Context, c *Config) (*current.Result, error) {
	out, err := execDelegate(ctx, c, "ADD", c.stdin)
	if err != nil {
		return nil, fmt.Errorf("ipam %q ADD: %w", c.Type, err)
	}
	r, err := create.CreateFromBytes(out)
	if err != nil {
		return nil, cnierr.Errorf(cnierr.DecodeFailure, "ipam %q ADD: decode result: %w", c.Type, err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		return nil, cnierr.Errorf(cnierr.DecodeFailure, "ipam %q ADD: convert result: %w", c.Type, err)
	}
	return res, nil
}

func delegateDel(ctx context.Context, c *Config) error {
	return delegate(ctx, c, "DEL")
}

// delegateCheck forwards CHECK. The runtime's stdin carries prevResult;
// when a caller's stdin lacks it, prev is put in, as CHECK needs one.
func delegateCheck(ctx context.Context, c *Config, prev *current.Result) error {
	if c == nil || prev == nil {
		return delegate(ctx, c, "CHECK")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(c.stdin, &m); err != nil || m["prevResult"] != nil {
		return delegate(ctx, c, "CHECK")
	}
	pr, err := prev.GetAsVersion(orDefault(c.cniVersion, "0.1.0"))
	if err == nil {
		m["prevResult"], err = json.Marshal(pr)
	}
	if err != nil {
		return cnierr.Errorf(cnierr.DecodeFailure, "ipam %q CHECK: encode prevResult: %w", c.Type, err)
	}
	stdin, err := json.Marshal(m)
	if err != nil {
		return cnierr.Errorf(cnierr.DecodeFailure, "ipam %q CHECK: encode config: %w", c.Type, err)
	}
	cc := *c
	cc.stdin = stdin
	return delegate(ctx, &cc, "CHECK")
}

func delegateGC(ctx context.Context, c *Config) error {
	return delegate(ctx, c, "GC")
}

func delegateStatus(ctx context.Context, c *Config) error {
	return delegate(ctx, c, "STATUS")
}

func delegate(ctx context.Context, c *Config, verb string) error {
	if c == nil {
		return nil
	}
	if _, err := execDelegate(ctx, c, verb, c.stdin); err != nil {
		return fmt.Errorf("ipam %q %s: %w", c.Type, verb, err)
	}
	return nil
}

// findDelegate looks the plugin up in CNI_PATH; a missing binary is the
// config problem it is (code 7) rather than code 999.
func findDelegate(c *Config) (string, error) {
	for _, dir := range filepath.SplitList(os.Getenv("CNI_PATH")) {
		p := filepath.Join(dir, c.Type)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", cnierr.Errorf(cnierr.InvalidConfig, `"ipam.type": plugin %q not found in CNI_PATH %q`, c.Type, os.Getenv("CNI_PATH"))
}

// execDelegate runs the delegate with the plugin's own environment and
// CNI_COMMAND set to verb, as libcni's invoke does, and returns its stdout.
// A failure the delegate reports keeps its CNI code. (invoke itself is not
// used: it links net/http and OpenTelemetry, whose start-up every plugin
// process would pay, delegating or not.)
func execDelegate(ctx context.Context, c *Config, verb string, stdin []byte) ([]byte, error) {
	path, err := findDelegate(c)
	if err != nil {
		return nil, err
	}
	env := []string{"CNI_COMMAND=" + verb}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "CNI_COMMAND=") {
			env = append(env, e)
		}
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path)
	cmd.Env, cmd.Stdin, cmd.Stdout, cmd.Stderr = env, bytes.NewReader(stdin), &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var te types.Error
		if json.Unmarshal(stdout.Bytes(), &te) == nil && (te.Code != 0 || te.Msg != "") {
			return nil, &te
		}
		return nil, fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	os.Stderr.Write(stderr.Bytes()) // the delegate's diagnostics, passed on
	return stdout.Bytes(), nil
}
