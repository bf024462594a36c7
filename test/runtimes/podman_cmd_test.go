//go:build runtimes

package runtimes

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/netdrivers/netdrivers/pkg/nettest"
	"github.com/netdrivers/netdrivers/pkg/state"
	"github.com/netdrivers/netdrivers/test/runtimes/image"
)

// skipWarning is what Podman 4 prints, and otherwise ignores, when a
// plugin's VERSION answer does not list the conflist's cniVersion: the
// network then silently does not exist.
const skipWarning = "Error validating CNI config file"

// podman is rootful Podman 4 with its CNI backend, configured through a
// private CONTAINERS_CONF and CONTAINERS_STORAGE_CONF: conflists in
// netDir, storage, run and lock dirs under dir; run from inside host.
type podman struct {
	host     *nettest.NS
	dir      string
	netDir   string
	rootfs   string
	stateDir string // NETDRIVERS_STATE_DIR of the plugins it runs
	env      []string
	rec      *recorded // every plugin call it made
}

// newPodman writes the private configuration (the network config dir
// holds only this test's conflists: /etc/cni/net.d is never read) and a
// busybox root file system for --rootfs (no registry is reachable).
func newPodman(t *testing.T, host *nettest.NS, name string) *podman {
	t.Helper()
	p := &podman{host: host, dir: dir(t, name)}
	p.netDir, p.stateDir = dir(t, name, "net.d"), dir(t, name, "nd-state")
	p.rec = newRecorded(t, name)
	var hard syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &hard); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`[containers]
# rootful podman raises nofile/nproc beyond what this root may: stay within
default_ulimits = ["nofile=%[1]d:%[1]d", "nproc=4096:4096"]
[network]
network_backend = "cni"
cni_plugin_dirs = [%[2]q]
network_config_dir = %[3]q
[engine]
cgroup_manager = "cgroupfs"
events_logger = "none"
runtime = "runc"
lock_type = "file"
tmp_dir = %[4]q
static_dir = %[5]q
volume_path = %[6]q
# Podman's environment, also for the "podman container cleanup" that
# conmon runs when a container exits (it gets CONTAINERS_CONF, not the
# caller's environment) and that may be the one calling DEL.
env = %[7]s
`, hard.Max, p.rec.binDir, p.netDir, filepath.Join(p.dir, "tmp"), filepath.Join(p.dir, "storage", "libpod"),
		filepath.Join(p.dir, "volumes"), tomlList(append([]string{state.EnvRoot + "=" + p.stateDir}, p.rec.env...)))
	storage := fmt.Sprintf("[storage]\ndriver = \"vfs\"\ngraphroot = %q\nrunroot = %q\n",
		filepath.Join(p.dir, "storage"), filepath.Join(p.dir, "run"))
	for f, body := range map[string]string{"containers.conf": conf, "storage.conf": storage} {
		if err := os.WriteFile(filepath.Join(p.dir, f), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p.env = append(os.Environ(), "CONTAINERS_CONF="+filepath.Join(p.dir, "containers.conf"),
		"CONTAINERS_STORAGE_CONF="+filepath.Join(p.dir, "storage.conf"))
	// The script's EXIT trap runs `podman rm -af` with this config inside
	// this namespace if the test dies before its cleanups.
	record("podman.list", p.dir+" "+host.Path())
	p.rootfs = dir(t, name, "rootfs")
	files, err := image.Busybox(busybox)
	if err != nil {
		t.Fatal(err)
	}
	if err := image.WriteRootfs(p.rootfs, files); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if out, err := p.run(nil, "rm", "-af", "-t", "0"); err != nil {
			t.Errorf("podman rm -af: %v\n%s", err, out)
		}
	})
	return p
}

// run runs podman with args from inside the host namespace (so the
// plugins it execs treat that namespace as the node), with extra
// environment. It fails when podman skipped a conflist (skipWarning).
func (p *podman) run(extraEnv []string, args ...string) (string, error) {
	cmd := exec.Command("podman", args...)
	cmd.Env = append(append([]string(nil), p.env...), extraEnv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := p.host.Do(func() error { return cmd.Start() })
	if err == nil {
		err = cmd.Wait()
	}
	if strings.Contains(stderr.String(), skipWarning) {
		return stdout.String(), fmt.Errorf("podman %s: podman skipped a conflist (a plugin's VERSION does not list its cniVersion):\n%s",
			strings.Join(args, " "), stderr.String())
	}
	if err != nil {
		return stdout.String(), fmt.Errorf("podman %s: %w\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// must is run that fails t.
func (p *podman) must(t *testing.T, extraEnv []string, args ...string) string {
	t.Helper()
	out, err := p.run(extraEnv, args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// networks lists the networks Podman loaded, failing when one that was
// written is missing: Podman drops a conflist it cannot validate with
// nothing but a warning, and the "network not found" that follows names
// no cause. The error carries podman's warning.
func (p *podman) networks(want ...string) ([]string, error) {
	cmd := exec.Command("podman", "network", "ls", "--format", "{{.Name}}")
	cmd.Env = p.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := p.host.Do(func() error { return cmd.Start() }); err != nil {
		return nil, err
	}
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("podman network ls: %w\n%s", err, stderr.String())
	}
	got := strings.Fields(stdout.String())
	var missing []string
	for _, w := range want {
		if !contains(got, w) {
			missing = append(missing, w)
		}
	}
	if len(missing) > 0 {
		return got, fmt.Errorf("podman did not load network(s) %s (loaded: %v); podman said:\n%s",
			strings.Join(missing, ", "), got, stderr.String())
	}
	return got, nil
}

// tomlList renders strings as a TOML array.
func tomlList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

// container is what podman inspect reports about one network of a
// container.
type container struct {
	ID, IP, MAC, NetNS string
	PID                int
}

// inspect reads a container's ID, netns path and, for network, its
// address and MAC as Podman recorded them from the plugin's result.
func (p *podman) inspect(t *testing.T, name, network string) container {
	t.Helper()
	var r []struct {
		ID              string `json:"Id"`
		State           struct{ Pid int }
		NetworkSettings struct {
			SandboxKey string
			Networks   map[string]struct {
				IPAddress  string
				MacAddress string
			}
		}
	}
	if err := json.Unmarshal([]byte(p.must(t, nil, "inspect", "--type", "container", name)), &r); err != nil || len(r) != 1 {
		t.Fatalf("podman inspect %s: %v", name, err)
	}
	n := r[0].NetworkSettings.Networks[network]
	return container{ID: r[0].ID, IP: n.IPAddress, MAC: n.MacAddress, NetNS: r[0].NetworkSettings.SandboxKey, PID: r[0].State.Pid}
}
