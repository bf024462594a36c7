package nettest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// Tmpfs is a small tmpfs in a mount namespace of its own, held by one
// locked thread, for a full or read-only disk without touching the test's
// mount namespace. Everyone reaches it through Path, the thread's root
// (/proc/<pid>/task/<tid>/root), which crosses into that namespace: plugins
// need no namespace of their own and still see every /run/netns pin. When
// t ends the thread exits, taking its namespace and the mount with it, so
// nothing is ever left mounted.
type Tmpfs struct {
	Path string
	dir  string // the mount point, inside the thread's namespace
	fns  chan func()
}

// NewTmpfs mounts a tmpfs of size bytes.
func NewTmpfs(t testing.TB, size int) *Tmpfs {
	t.Helper()
	m := &Tmpfs{dir: t.TempDir(), fns: make(chan func())}
	errc, done := make(chan error, 1), make(chan struct{})
	go m.serve(size, errc, done)
	if err := <-errc; err != nil {
		t.Fatalf("tmpfs on %s: %v", m.dir, err)
	}
	t.Cleanup(func() { close(m.fns); <-done })
	return m
}

// serve runs Do's functions on a thread that is never unlocked: the
// runtime discards it, and the kernel its namespace, when serve returns.
func (m *Tmpfs) serve(size int, errc chan<- error, done chan<- struct{}) {
	defer close(done)
	runtime.LockOSThread()
	if err := m.mount(size); err != nil {
		errc <- err
		return
	}
	m.Path = fmt.Sprintf("/proc/%d/task/%d/root%s", os.Getpid(), unix.Gettid(), m.dir)
	errc <- nil
	for fn := range m.fns {
		fn()
	}
	unix.Unmount(m.dir, unix.MNT_DETACH)
}

func (m *Tmpfs) mount(size int) error {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("unshare mount namespace: %w", err)
	}
	// Private first, so the tmpfs never propagates to the host's namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	return unix.Mount("tmpfs", m.dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("size=%d,mode=0700", size))
}

// Do runs fn on the thread whose namespace holds the mount.
func (m *Tmpfs) Do(fn func() error) error {
	errc := make(chan error, 1)
	m.fns <- func() { errc <- fn() }
	return <-errc
}

// filler takes the space Fill uses up.
func (m *Tmpfs) filler() string { return filepath.Join(m.Path, "zz-filler") }

// Fill writes to a file until the tmpfs is full (ENOSPC); Free removes it.
func (m *Tmpfs) Fill(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(m.filler(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); errors.Is(err, unix.ENOSPC) {
			return
		} else if err != nil {
			t.Fatal(err)
		}
	}
}

// Free undoes Fill.
func (m *Tmpfs) Free(t testing.TB) {
	t.Helper()
	if err := os.Remove(m.filler()); err != nil {
		t.Fatal(err)
	}
}

// SetReadOnly remounts the tmpfs read-only, or read-write again.
func (m *Tmpfs) SetReadOnly(t testing.TB, ro bool) {
	t.Helper()
	flags := uintptr(unix.MS_REMOUNT | unix.MS_NOSUID | unix.MS_NODEV)
	if ro {
		flags |= unix.MS_RDONLY
	}
	if err := m.Do(func() error { return unix.Mount("", m.dir, "", flags, "") }); err != nil {
		t.Fatalf("remount %s (read-only %v): %v", m.dir, ro, err)
	}
}
