package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
)

// The exec floor does not depend on W, so timing it inside a scenario's
// node just before each W level shows how much the machine's load moved
// between the levels; the flatness ratios are also given corrected for it.

// probeN is the number of timed no-op ADDs per W level.
const probeN = 30

// Probe is the exec floor's ADD p50 taken just before a W level's rounds.
type Probe struct {
	W   int     `json:"w"`
	P50 float64 `json:"p50_ms"`
}

// probeRunner is a runner for the no-op plugin in the scenario's node,
// with its own usage so the floor's numbers stay those of floor/exec.
func probeRunner(cfg *config, env *hostEnv) (*runner, *libcni.NetworkConfigList, error) {
	b, err := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "bench-probe",
		"plugins": single("noop")("")})
	if err != nil {
		return nil, nil, err
	}
	list, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		return nil, nil, err
	}
	r := newRunner(env.host, cfg, "floor", filepath.Join(env.work, "probe-cache"), filepath.Join(env.work, "probe-state"), newUsage())
	return r, list, nil
}

// probe times probeN no-op ADDs, one caller, at the current W.
func (p *pluginBench) probe(ctx context.Context) (Probe, error) {
	rt := func(i int) *libcni.RuntimeConf {
		return &libcni.RuntimeConf{ContainerID: fmt.Sprintf("probe-w%d-%d", p.live, i), NetNS: p.pool[0].Path(), IfName: "eth0"}
	}
	v := batch(ctx, 1, probeN, func(ctx context.Context, _, i int) error {
		_, err := p.probeCNI.AddNetworkList(ctx, p.probeList, rt(i))
		return err
	})
	for i := range probeN { // untimed: only clears libcni's result cache
		if err := p.probeCNI.DelNetworkList(ctx, p.probeList, rt(i)); err != nil {
			return Probe{}, fmt.Errorf("exec floor probe DEL: %w", err)
		}
	}
	if v.FirstError != "" {
		return Probe{}, fmt.Errorf("exec floor probe at W=%d: %s", p.live, v.FirstError)
	}
	return Probe{W: p.live, P50: v.Summary.P50}, nil
}
