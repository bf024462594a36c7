package netns

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseMountLine(t *testing.T) {
	cases := []struct {
		line string
		want mountEntry
		ok   bool
	}{
		{`812 29 0:4 net:[4026532281] /run/netns/cni-1 rw shared:5 - nsfs nsfs rw`,
			mountEntry{Root: "net:[4026532281]", Point: "/run/netns/cni-1", FSType: "nsfs"}, true},
		{`30 1 8:1 / /mnt/my\040dir rw,relatime - ext4 /dev/sda1 rw`,
			mountEntry{Root: "/", Point: "/mnt/my dir", FSType: "ext4"}, true},
		{`31 1 8:1 / /a\134b rw master:1 shared:2 - tmpfs tmpfs rw`,
			mountEntry{Root: "/", Point: `/a\b`, FSType: "tmpfs"}, true},
		{`garbage`, mountEntry{}, false},
		{`1 2 3:4 / /x rw a b c d`, mountEntry{}, false}, // no separator
	}
	for _, tc := range cases {
		got, ok := parseMountLine(tc.line)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseMountLine(%q) = %+v, %v; want %+v, %v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
	for _, p := range []string{"/run/netns/a b", "/x\ty\\z", "/plain"} {
		if got := unescape(escape(p)); got != p {
			t.Errorf("unescape(escape(%q)) = %q", p, got)
		}
	}
	if got := unescape(`a\04`); got != `a\04` {
		t.Errorf("a truncated escape = %q, want it kept", got)
	}
}

// pinned creates a network namespace pinned by a bind mount on a file in
// a temporary directory, unmounted when t ends.
func pinned(t *testing.T) (string, ID) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ns")
	if err := os.WriteFile(path, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, "")
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(path, unix.MNT_DETACH) })
	id, err := IDOf(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, id
}

// TestCheckMountBothWays: the statx check and the mountinfo fallback agree.
func TestCheckMountBothWays(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (mounts)")
	}
	path, id := pinned(t)
	plain := filepath.Join(t.TempDir(), "plain")
	os.WriteFile(plain, nil, 0o644)
	for name, check := range map[string]func(string, ID) error{"statx": checkMount, "mountinfo": checkMountInfo} {
		if err := check(path, id); err != nil {
			t.Errorf("%s: pinned namespace refused: %v", name, err)
		}
		if err := check(plain, id); !errors.Is(err, errNotMountPoint) {
			t.Errorf("%s: plain file = %v, want errNotMountPoint", name, err)
		}
		if err := check(path, ID{Dev: id.Dev, Ino: id.Ino + 1}); err == nil {
			t.Errorf("%s: a mount of another namespace passed", name)
		}
	}
}
