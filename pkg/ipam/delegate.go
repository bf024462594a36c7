package ipam

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/invoke"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
)

// Delegation execs the plugin named by "ipam.type" from CNI_PATH with the
// plugin's own stdin and environment (CNI_COMMAND replaced), as the
// reference plugins' ipam.Exec* do. Errors the delegate prints keep its
// code; a delegate that cannot be found is a config error (code 7).

func delegateAdd(ctx context.Context, c *Config) (*current.Result, error) {
	if err := findDelegate(c); err != nil {
		return nil, err
	}
	r, err := invoke.DelegateAdd(ctx, c.Type, c.stdin, nil)
	if err != nil {
		return nil, fmt.Errorf("ipam %q ADD: %w", c.Type, err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		return nil, cnierr.Errorf(cnierr.DecodeFailure, "ipam %q ADD: convert result: %w", c.Type, err)
	}
	return res, nil
}

func delegateDel(ctx context.Context, c *Config) error {
	return delegate(ctx, c, "DEL", invoke.DelegateDel)
}

// delegateCheck forwards CHECK. The runtime's stdin carries prevResult;
// when a caller's stdin lacks it, prev is put in, as CHECK needs one.
func delegateCheck(ctx context.Context, c *Config, prev *current.Result) error {
	if c == nil || prev == nil {
		return delegate(ctx, c, "CHECK", invoke.DelegateCheck)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(c.stdin, &m); err != nil || m["prevResult"] != nil {
		return delegate(ctx, c, "CHECK", invoke.DelegateCheck)
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
	return delegate(ctx, &cc, "CHECK", invoke.DelegateCheck)
}

func delegateGC(ctx context.Context, c *Config) error {
	return delegate(ctx, c, "GC", invoke.DelegateGC)
}

func delegateStatus(ctx context.Context, c *Config) error {
	return delegate(ctx, c, "STATUS", invoke.DelegateStatus)
}

type delegateFunc func(ctx context.Context, plugin string, conf []byte, exec invoke.Exec) error

func delegate(ctx context.Context, c *Config, verb string, fn delegateFunc) error {
	if c == nil {
		return nil
	}
	if err := findDelegate(c); err != nil {
		return err
	}
	if err := fn(ctx, c.Type, c.stdin, nil); err != nil {
		return fmt.Errorf("ipam %q %s: %w", c.Type, verb, err)
	}
	return nil
}

// findDelegate looks the plugin up first, so that a missing binary is
// reported as the config problem it is rather than as code 999.
func findDelegate(c *Config) error {
	paths := filepath.SplitList(os.Getenv("CNI_PATH"))
	if _, err := invoke.FindInPath(c.Type, paths); err != nil {
		return cnierr.Errorf(cnierr.InvalidConfig, `"ipam.type": plugin %q not found in CNI_PATH %q: %w`, c.Type, os.Getenv("CNI_PATH"), err)
	}
	return nil
}
