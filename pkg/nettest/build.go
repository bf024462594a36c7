package nettest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netdrivers/netdrivers/pkg/safefile"
)

// EnvBin names a directory of prebuilt binaries (scripts/test.sh sets it);
// without it, Bins builds them once per test process.
const EnvBin = "NETDRIVERS_BIN"

// RefVersion is the containernetworking/plugins release compared against.
const RefVersion = "v1.9.1"

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// RepoRoot is the module root, found from this source file.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Bins returns a directory holding every plugin binary (and "loopback").
func Bins(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		if d := os.Getenv(EnvBin); d != "" {
			binDir, binErr = filepath.Abs(d)
			return
		}
		binDir, binErr = os.MkdirTemp("", "netdrivers-bin-")
		if binErr != nil {
			return
		}
		cmd := exec.Command(filepath.Join(RepoRoot(), "scripts", "build.sh"), binDir)
		cmd.Dir = RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("build plugins: %w\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binDir
}

// RefPlugins are the reference binaries RefBins provides.
var RefPlugins = []string{
	"plugins/main/bridge", "plugins/main/macvlan", "plugins/main/loopback",
	"plugins/ipam/host-local", "plugins/ipam/static", "plugins/meta/portmap",
	"plugins/meta/firewall",
}

// RefBins returns a directory with the reference plugins, built from the
// Go module proxy into <repo>/.cache on first use (locked across processes).
func RefBins(t testing.TB) string {
	t.Helper()
	dir, err := BuildRef()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// BuildRef builds the reference plugins unless they are already cached.
func BuildRef() (string, error) {
	dir := filepath.Join(RepoRoot(), ".cache", "ref-plugins", RefVersion)
	if refComplete(dir) {
		return dir, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	l, err := safefile.Acquire(ctx, dir+".lock")
	if err != nil {
		return "", err
	}
	defer l.Unlock()
	if refComplete(dir) {
		return dir, nil
	}
	args := []string{"install", "-trimpath"}
	for _, p := range RefPlugins {
		args = append(args, "github.com/containernetworking/plugins/"+p+"@"+RefVersion)
	}
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
	cmd.Dir = os.TempDir() // outside this module: go install pkg@version
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build reference plugins %s: %w\n%s", RefVersion, err, out)
	}
	return dir, nil
}

func refComplete(dir string) bool {
	for _, p := range RefPlugins {
		if _, err := os.Stat(filepath.Join(dir, filepath.Base(p))); err != nil {
			return false
		}
	}
	return true
}

// Name returns a short unique name with a prefix, fit for an interface
// (<= 15 bytes when prefix <= 5).
func Name(prefix string) string { return prefix + RandHex(15-len(prefix)) }

// ID returns a unique container ID carrying the test's name.
func ID(t testing.TB) string {
	s := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, t.Name())
	if len(s) > 40 {
		s = s[len(s)-40:]
	}
	return strings.Trim("c"+s, "-") + "-" + RandHex(8)
}
