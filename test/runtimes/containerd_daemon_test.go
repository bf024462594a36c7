//go:build runtimes

package runtimes

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netdrivers/netdrivers/pkg/nettest"
	"github.com/netdrivers/netdrivers/pkg/state"
	"github.com/netdrivers/netdrivers/test/runtimes/cri"
	"github.com/netdrivers/netdrivers/test/runtimes/image"
)

// Images the CRI tests run, imported from local docker-archives.
const (
	pauseRef   = "localhost/netdrivers/pause:e2e"
	busyboxRef = "localhost/netdrivers/busybox:e2e"
)

// containerd is a private containerd: own config, root, state, sockets
// and runc root under dir, running inside host (a throwaway namespace the
// plugins treat as the node).
type containerd struct {
	host     *nettest.NS
	dir      string
	sock     string
	stateDir string // NETDRIVERS_STATE_DIR of the plugins it runs
	cmd      *exec.Cmd
	exited   chan struct{}
	cri      *cri.Client
	rec      *recorded // every plugin call it made
}

// ctdConfig renders config.toml. Each handler (a RuntimeClass) gets its
// own CNI conf dir, so one daemon serves every driver's scenario; the
// default handler reads conf dir "default", as a kubelet without
// RuntimeClass does.
func ctdConfig(dir, cniBin string, handlers []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[7]q
    conf_dir = %[8]q
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), filepath.Join(dir, "containerd.sock"),
		filepath.Join(dir, "containerd.sock.ttrpc"), filepath.Join(dir, "opt"), pauseRef, cniBin,
		filepath.Join(dir, "net.d", "default"))
	for _, h := range append([]string{"runc"}, handlers...) {
		fmt.Fprintf(&b, `    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.%[1]q]
      runtime_type = "io.containerd.runc.v2"
`, h)
		if h != "runc" {
			fmt.Fprintf(&b, "      cni_conf_dir = %q\n", filepath.Join(dir, "net.d", h))
		}
		fmt.Fprintf(&b, `      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.%q.options]
        Root = %q
`, h, filepath.Join(dir, "runc"))
	}
	return b.String()
}

// startContainerd writes the conflists (def for the default handler,
// the others per handler), starts containerd inside host and imports the
// images. Everything is stopped and removed when t ends: pods first (the
// kubelet's teardown, two DELs each), then the daemon, by PID.
func startContainerd(t *testing.T, host *nettest.NS, def []byte, handlers map[string][]byte) *containerd {
	t.Helper()
	d := &containerd{host: host, dir: dir(t, "containerd"), exited: make(chan struct{})}
	d.sock = filepath.Join(d.dir, "containerd.sock")
	d.stateDir = dir(t, "containerd", "nd-state")
	d.rec = newRecorded(t, "containerd")
	var names []string
	writeConf(t, dir(t, "containerd", "net.d", "default"), "default", def)
	for h, body := range handlers {
		names = append(names, h)
		writeConf(t, dir(t, "containerd", "net.d", h), h, body)
	}
	cfg := filepath.Join(d.dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(ctdConfig(d.dir, d.rec.binDir, names)), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(d.dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	d.cmd = exec.Command("containerd", "--config", cfg)
	d.cmd.Env = append(append(os.Environ(), state.EnvRoot+"="+d.stateDir), d.rec.env...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	// The daemon, and so every plugin it runs, lives in host.
	host.MustDo(t, func() error { return d.cmd.Start() })
	record("pids", strconv.Itoa(d.cmd.Process.Pid))
	go func() { d.cmd.Wait(); logf.Close(); close(d.exited) }()
	t.Cleanup(func() { d.stop(t) })

	if d.cri, err = cri.Dial(d.sock); err != nil {
		t.Fatal(err)
	}
	d.waitReady(t)
	d.importImage(t, pauseRef, image.Pause, pause, image.Config{Entrypoint: []string{"/pause"}})
	d.importImage(t, busyboxRef, image.Busybox, busybox, image.Config{Cmd: []string{"sh"},
		Env: []string{"PATH=/bin"}})
	return d
}

// waitReady polls until the CRI answers and has loaded the default
// network (NetworkReady), or fails with containerd's log.
func (d *containerd) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := d.cri.NetworkReady(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-d.exited:
			t.Fatalf("containerd exited: %v\n%s", err, d.log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd not ready after 20s: %v\n%s", err, d.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// importImage builds a one-layer docker-archive and imports it with ctr
// into the k8s.io namespace, unpacked for the CRI's snapshotter.
func (d *containerd) importImage(t *testing.T, ref string, files func(string) ([]image.File, error), bin string, cfg image.Config) {
	t.Helper()
	fs, err := files(bin)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := image.WriteArchive(&buf, ref, fs, cfg); err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(d.dir, strings.ReplaceAll(filepath.Base(ref), ":", "_")+".tar")
	if err := os.WriteFile(tarball, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ctr", "--address", d.sock, "--namespace", "k8s.io",
		"images", "import", "--snapshotter", "native", tarball).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr images import %s: %v\n%s", ref, err, out)
	}
	nettest.Eventually(t, 10*time.Second, "CRI sees image "+ref, func() error {
		ok, err := d.cri.HasImage(context.Background(), ref)
		if err == nil && !ok {
			err = errors.New("not listed")
		}
		return err
	})
}

// stop removes every pod left, stops the daemon by PID and checks that no
// shim of it survives.
func (d *containerd) stop(t *testing.T) {
	if d.cri != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := d.cri.RemoveAll(ctx); err != nil {
			t.Errorf("remove leftover pods: %v", err)
			d.killContainers(t)
		}
		cancel()
		d.cri.Close()
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(15 * time.Second):
		t.Errorf("containerd ignored SIGTERM for 15s; killing it")
		d.cmd.Process.Kill()
		<-d.exited
	}
	for _, pid := range shimsOf(d.sock) {
		t.Errorf("containerd shim %d outlived its pods; killing it", pid)
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// killContainers force-deletes, with runc, the containers of pods the
// CRI could not remove (their processes would outlive the daemon).
func (d *containerd) killContainers(t *testing.T) {
	roots, _ := filepath.Glob(filepath.Join(d.dir, "runc", "*"))
	for _, root := range roots {
		out, err := exec.Command("runc", "--root", root, "list", "-q").Output()
		if err != nil {
			continue
		}
		for _, id := range strings.Fields(string(out)) {
			if out, err := exec.Command("runc", "--root", root, "delete", "--force", id).CombinedOutput(); err != nil {
				t.Errorf("runc delete --force %s: %v: %s", id, err, out)
			}
		}
	}
}

// log returns containerd's output (for failure messages).
func (d *containerd) log() string {
	b, _ := os.ReadFile(filepath.Join(d.dir, "containerd.log"))
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

// shimsOf lists the PIDs of containerd-shim processes serving address.
func shimsOf(address string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 0 && strings.Contains(args[0], "containerd-shim") && strings.Contains(string(b), address) {
			pids = append(pids, pid)
		}
	}
	return pids
}
