//go:build runtimes

package runtimes

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netdrivers/netdrivers/test/runtimes/cri"
)

// pod is a running pod sandbox with one busybox container.
type pod struct {
	*cri.Pod
	id, ctr string
	ips     []string
	netns   string // CNI_NETNS of the pod's ADD
}

var podSeq atomic.Int64

// startPod runs a sandbox (CNI ADD) and a busybox container in it running
// argv, and reads the pod's addresses from PodSandboxStatus. Safe to call
// from several goroutines, as the kubelet starts pods. A pod whose sandbox
// exists is returned also with an error, for cleanup.
func (d *containerd) startPod(ctx context.Context, p *cri.Pod, argv ...string) (*pod, error) {
	p.Namespace, p.UID = "e2e", fmt.Sprintf("uid-%s-%d", p.Name, podSeq.Add(1))
	p.LogDir = filepath.Join(d.dir, "logs", p.UID)
	id, err := d.cri.RunPod(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("%w\ncontainerd log:\n%s", err, d.log())
	}
	r := &pod{Pod: p, id: id}
	if r.ctr, err = d.cri.Start(ctx, id, p, "main", busyboxRef, argv...); err != nil {
		return r, err
	}
	if r.ips, err = d.cri.PodIPs(ctx, id); err != nil {
		return r, err
	}
	if r.netns, err = d.cri.NetNSPath(ctx, id); err != nil {
		return r, err
	}
	return r, nil
}

// runPod is startPod that fails t; the pod is removed when t ends if the
// scenario did not get that far.
func (d *containerd) runPod(ctx context.Context, t *testing.T, p *cri.Pod, argv ...string) *pod {
	t.Helper()
	r, err := d.startPod(ctx, p, argv...)
	if r != nil {
		t.Cleanup(func() { d.forget(r.id) })
	}
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// forget removes a pod a failed scenario left (gone is fine).
func (d *containerd) forget(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d.cri.StopPod(ctx, id)
	d.cri.RemovePod(ctx, id)
}

// exec runs argv in the pod's container.
func (d *containerd) exec(ctx context.Context, t *testing.T, p *pod, argv ...string) string {
	t.Helper()
	out, err := d.cri.Exec(ctx, p.ctr, 10*time.Second, argv...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// stopPod tears the pod down as the kubelet does: StopPodSandbox (DEL
// with the netns and prevResult; the netns must be gone after it), then
// RemovePodSandbox (DEL again, with neither).
func (d *containerd) stopPod(ctx context.Context, p *pod) error {
	if err := d.cri.StopPod(ctx, p.id); err != nil {
		return fmt.Errorf("%w\ncontainerd log:\n%s", err, d.log())
	}
	if _, err := os.Lstat(p.netns); !os.IsNotExist(err) {
		return fmt.Errorf("pod %s: network namespace %s left after StopPodSandbox (%v)", p.Name, p.netns, err)
	}
	if err := d.cri.RemovePod(ctx, p.id); err != nil {
		return fmt.Errorf("%w\ncontainerd log:\n%s", err, d.log())
	}
	return nil
}

// removePod is stopPod that fails t, then wantDELs.
func (d *containerd) removePod(ctx context.Context, t *testing.T, p *pod, plugin string) {
	t.Helper()
	if err := d.stopPod(ctx, p); err != nil {
		t.Fatal(err)
	}
	d.wantDELs(t, p, plugin)
}

// wantDELs asserts that plugin saw exactly the kubelet teardown's two
// DELs of the pod, the first with the netns and a prevResult, the second
// with neither, and answered both with success.
func (d *containerd) wantDELs(t *testing.T, p *pod, plugin string) {
	t.Helper()
	dels := of(d.rec.calls(t), plugin, "DEL", p.id)
	ok := len(dels) == 2 && dels[0].netns() == p.netns && dels[0].hasPrevResult() &&
		dels[1].netns() == "" && !dels[1].hasPrevResult()
	for _, c := range dels {
		ok = ok && c.Exit == 0
	}
	if !ok {
		t.Errorf("pod %s: want two successful DELs (the netns and a prevResult, then neither), got:", p.Name)
		d.rec.dump(t, p.id)
	}
}
