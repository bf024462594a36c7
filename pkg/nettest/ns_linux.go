// Package nettest is the test harness: throwaway network namespaces, the
// built binaries, libcni driven as a runtime drives it, and assertions on
// kernel state and real traffic. Test code only.
package nettest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/netns"
)

// NSDir is where test namespaces are pinned.
const NSDir = "/run/netns"

// RequireRoot skips t unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
}

// NS is a network namespace pinned at /run/netns/<Name>, removed in Cleanup.
type NS struct {
	Name string
	h    *netns.Handle
}

// Path is the namespace's bind-mount path, what CNI_NETNS carries.
func (n *NS) Path() string { return filepath.Join(NSDir, n.Name) }

// Handle is the open namespace (netlink bound to it).
func (n *NS) Handle() *netns.Handle { return n.h }

// NL is the namespace's netlink handle.
func (n *NS) NL(t testing.TB) netlinksafe.Handle {
	t.Helper()
	nl, err := n.h.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	return nl
}

// RandHex returns n random hex digits.
func RandHex(n int) string {
	b := make([]byte, (n+1)/2)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)[:n]
}

var nsMu sync.Mutex // serialises mounts on /run/netns (see ENOSPC note in README)

// NewNS creates a fresh network namespace, with lo up, pinned under
// /run/netns. It is unmounted and deleted when t ends, also on failure.
func NewNS(t testing.TB) *NS {
	t.Helper()
	n, err := CreateNS("ndt-" + RandHex(10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Remove(); err != nil {
			t.Errorf("remove namespace %s: %v", n.Name, err)
		}
	})
	return n
}

// CreateNS creates and pins a namespace named name (not cleaned up).
func CreateNS(name string) (*NS, error) {
	if err := os.MkdirAll(NSDir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(NSDir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return nil, err
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		// This thread enters the new namespace and is never unlocked, so
		// the runtime discards it instead of reusing it elsewhere.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		nsMu.Lock()
		err := unix.Mount(src, path, "none", unix.MS_BIND, "")
		nsMu.Unlock()
		errc <- err
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("create namespace %s: %w", name, err)
	}
	h, err := netns.Open(path)
	if err != nil {
		return nil, err
	}
	n := &NS{Name: name, h: h}
	nl, err := h.Netlink()
	if err != nil {
		n.Remove()
		return nil, err
	}
	lo, err := nl.LinkByName("lo")
	if err == nil {
		err = nl.LinkSetUp(lo)
	}
	if err != nil {
		n.Remove()
		return nil, fmt.Errorf("set lo up in %s: %w", name, err)
	}
	return n, nil
}

// Remove closes, unmounts and deletes the namespace path. Idempotent.
func (n *NS) Remove() error {
	if n.h != nil {
		n.h.Close()
		n.h = nil
	}
	path := n.Path()
	nsMu.Lock()
	err := unix.Unmount(path, unix.MNT_DETACH)
	nsMu.Unlock()
	if err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

// Do runs fn on a thread inside the namespace (sockets made there stay
// in it; children started there inherit it).
func (n *NS) Do(fn func() error) error { return n.h.Do(fn) }

// MustDo is Do that fails t on error.
func (n *NS) MustDo(t testing.TB, fn func() error) {
	t.Helper()
	if err := n.Do(fn); err != nil {
		t.Fatal(err)
	}
}

// DoAs is Do with the thread's effective uid set to uid during fn, for
// sockets that must carry another process's credentials (SO_PEERCRED is
// taken at connect and listen). A raw setresuid changes only this
// thread, which Do keeps locked; it is root again before Do returns.
func (n *NS) DoAs(uid int, fn func() error) error {
	return n.Do(func() error {
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
			return fmt.Errorf("setresuid %d: %w", uid, e)
		}
		defer unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0))
		return fn()
	})
}

// Sysctl sets a sysctl inside the namespace (e.g. "net/ipv4/ip_forward").
func (n *NS) Sysctl(t testing.TB, key, value string) {
	t.Helper()
	n.MustDo(t, func() error {
		return os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644)
	})
}

// ReadSysctl reads a sysctl inside the namespace.
func (n *NS) ReadSysctl(t testing.TB, key string) string {
	t.Helper()
	var v []byte
	n.MustDo(t, func() (err error) {
		v, err = os.ReadFile(filepath.Join("/proc/sys", key))
		return err
	})
	return strings.TrimSpace(string(v))
}

// AddrAssignType is the kernel's addr_assign_type of link in the
// namespace: 1 random (which udev's MACAddressPolicy replaces), 3 set by
// userspace. Only sysfs has it, so it is read through "ip netns exec",
// which mounts the namespace's own.
func (n *NS) AddrAssignType(t testing.TB, link string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", n.Name, "cat", "/sys/class/net/"+link+"/addr_assign_type").CombinedOutput()
	if err != nil {
		t.Fatalf("addr_assign_type of %s in %s: %v: %s", link, n.Name, err, out)
	}
	return strings.TrimSpace(string(out))
}

// Run executes a command inside the namespace and returns its combined
// output.
func (n *NS) Run(name string, args ...string) (string, error) {
	var out []byte
	err := n.Do(func() error {
		var err error
		out, err = exec.Command(name, args...).CombinedOutput()
		return err
	})
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), n.Name, err, out)
	}
	return string(out), nil
}

// MustRun is Run that fails t on error.
func (n *NS) MustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := n.Run(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// OpenNS opens a second, independent handle on n (for concurrent use).
func OpenNS(n *NS) (*netns.Handle, error) { return netns.Open(n.Path()) }
