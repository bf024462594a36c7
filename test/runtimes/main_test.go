//go:build runtimes

// Package runtimes runs the plugins under real container runtimes:
// containerd's CRI, driven over its socket the way the kubelet drives it,
// and Podman 4 with its CNI backend. scripts/e2e-runtimes.sh installs the
// runtimes, builds everything and runs these tests (go test -tags
// runtimes); every runtime gets private config, state and sockets, and
// runs inside a throwaway "host" network namespace, so the node's own
// network, firewall and /etc/cni/net.d are never touched.
package runtimes

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// Environment set by scripts/e2e-runtimes.sh.
const (
	envWork    = "ND_RT_WORK"    // private scratch dir; the script removes it
	envPause   = "ND_RT_PAUSE"   // the pause binary (built from ./pause)
	envBusybox = "ND_RT_BUSYBOX" // a static busybox
)

var (
	work    string // every file the runtimes write lives below it
	binDir  string // the built plugins (NETDRIVERS_BIN)
	busybox string
	pause   string
)

func TestMain(m *testing.M) {
	work = os.Getenv(envWork)
	if work == "" || os.Geteuid() != 0 {
		fmt.Println("runtimes: skipped (run as root through scripts/e2e-runtimes.sh)")
		os.Exit(0)
	}
	binDir = os.Getenv(nettest.EnvBin)
	pause = os.Getenv(envPause)
	busybox = os.Getenv(envBusybox)
	if binDir == "" || pause == "" || busybox == "" {
		fmt.Fprintf(os.Stderr, "runtimes: %s, %s and %s must be set\n", nettest.EnvBin, envPause, envBusybox)
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// envDrivers, when set, limits the run to the listed drivers (while
// developing beside drivers that do not build yet); the others are
// reported as skipped.
const envDrivers = "ND_RT_DRIVERS"

// driverExists reports whether plugins/<name> is in the tree (and, with
// ND_RT_DRIVERS set, listed there).
func driverExists(name string) bool {
	if only := os.Getenv(envDrivers); only != "" && !contains(strings.Split(only, ","), name) {
		return false
	}
	st, err := os.Stat(filepath.Join(nettest.RepoRoot(), "plugins", name))
	return err == nil && st.IsDir()
}

// requireDriver skips t, loudly, when the driver has not landed yet. A
// driver that exists must work: nothing else skips.
func requireDriver(t *testing.T, names ...string) {
	t.Helper()
	var missing []string
	for _, n := range names {
		if !driverExists(n) {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		t.Skipf("SKIPPED: driver %s not in plugins/ yet (or not in %s)", strings.Join(missing, ", "), envDrivers)
	}
}

var recordMu sync.Mutex

// record appends a line to a list in the work dir that the script's EXIT
// trap reads when a test dies before its cleanups ran (go test -timeout).
func record(list, line string) {
	recordMu.Lock()
	defer recordMu.Unlock()
	f, err := os.OpenFile(filepath.Join(work, list), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintln(f, line)
}

// newNS is nettest.NewNS whose path the script can also remove.
func newNS(t *testing.T) *nettest.NS {
	t.Helper()
	n := nettest.NewNS(t)
	record("netns.list", n.Path())
	return n
}

// dir makes a fresh directory under the work dir.
func dir(t *testing.T, parts ...string) string {
	t.Helper()
	d := filepath.Join(append([]string{work}, parts...)...)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}
