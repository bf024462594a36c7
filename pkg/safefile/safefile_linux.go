// Package safefile reads, writes and locks small state files without
// following symlinks or trusting their size, and without leaving partial
// content behind a crash.
package safefile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
)

// MaxSize bounds what Read returns; state files are small.
const MaxSize = 1 << 20

// ErrTooLarge is returned for a file larger than MaxSize.
var ErrTooLarge = errors.New("file too large")

// ErrNotRegular is returned for a symlink, directory or device.
var ErrNotRegular = errors.New("not a regular file")

// Read returns the content of a regular file, refusing symlinks (at the
// last component), special files and files over MaxSize.
func Read(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("read %s: %w", path, ErrNotRegular)
		}
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("read %s: %w", path, ErrNotRegular)
	}
	if st.Size() > MaxSize {
		return nil, fmt.Errorf("read %s: %w (%d bytes)", path, ErrTooLarge, st.Size())
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("read %s: %w", path, ErrTooLarge)
	}
	return data, nil
}

// WriteAtomic replaces path with data, so readers see the old or the new
// content. The data is written to an unnamed file (O_TMPFILE), linked in
// as TempName(path) and renamed over path: a process killed while writing
// leaves nothing, and one killed between link and rename leaves only
// TempName(path), which the next write of path (or RemoveWithTemp) takes
// away. Writers of one path must not run concurrently.
func WriteAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := writeUnnamed(path, data, perm)
	if err != nil {
		return err
	}
	defer f.Close()
	tmp := TempName(path)
	err = linkFile(f, tmp)
	if errors.Is(err, os.ErrExist) {
		os.Remove(tmp) // left by a writer killed before its rename
		err = linkFile(f, tmp)
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			if _, serr := os.Lstat(path); serr == nil {
				return nil // a lister's Promote renamed it for us
			}
		}
		os.Remove(tmp)
		return err
	}
	return nil
}

// CreateExclusive creates path with data only if it does not exist
// (os.ErrExist otherwise). The content is complete the moment the name
// appears (an unnamed file linked into place), and a crash leaves nothing.
func CreateExclusive(path string, data []byte, perm os.FileMode) error {
	f, err := writeUnnamed(path, data, perm)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := linkFile(f, path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create %s: %w", path, os.ErrExist)
		}
		return err
	}
	return nil
}

// TempName is where WriteAtomic stages path: ".<name>.tmp" beside it.
func TempName(path string) string {
	dir, base := filepath.Split(path)
	return filepath.Join(dir, "."+base+".tmp")
}

// RemoveWithTemp removes path and its staging name; gone is success.
func RemoveWithTemp(path string) error {
	os.Remove(TempName(path))
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// writeUnnamed writes data to an unnamed file in path's directory.
func writeUnnamed(path string, data []byte, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(filepath.Dir(path), unix.O_TMPFILE|os.O_WRONLY|unix.O_CLOEXEC, perm)
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Chmod(perm); err != nil { // O_TMPFILE's mode passes the umask
		f.Close()
		return nil, err
	}
	return f, nil
}

// linkFile gives the unnamed file f the name path (EEXIST if taken).
// Equivalent to: linkat(/proc/self/fd/N, path, AT_SYMLINK_FOLLOW)
func linkFile(f *os.File, path string) error {
	err := unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", f.Fd()), unix.AT_FDCWD, path, unix.AT_SYMLINK_FOLLOW)
	if err != nil {
		return &os.LinkError{Op: "link", Old: f.Name(), New: path, Err: err}
	}
	return nil
}

// IsTemp reports whether a directory entry is a staging name of
// WriteAtomic (left behind only by a crash between link and rename).
func IsTemp(name string) bool {
	return len(name) > len("..tmp") && strings.HasPrefix(name, ".") && strings.HasSuffix(name, ".tmp")
}

// Promote finishes the WriteAtomic that staged name in dir: the staged
// content is complete and newer, so it is renamed over its final name,
// which Promote returns. A writer still running sees its rename done.
func Promote(dir, name string) (string, error) {
	final := strings.TrimSuffix(strings.TrimPrefix(name, "."), ".tmp")
	if err := os.Rename(filepath.Join(dir, name), filepath.Join(dir, final)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return final, err
	}
	return final, nil
}

// Lock is an exclusive flock on a file, released by Unlock or process exit.
type Lock struct{ f *os.File }

// ErrLockTimeout is returned when a lock is not granted in time (code 11).
var ErrLockTimeout = cnierr.New(cnierr.TryAgainLater, "timed out waiting for a lock")

// DefaultLockTimeout is how long Acquire waits when ctx has no deadline.
const DefaultLockTimeout = 60 * time.Second

// Acquire takes an exclusive flock on path, creating it if needed. It
// waits until ctx ends (or DefaultLockTimeout without a deadline).
func Acquire(ctx context.Context, path string) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err == nil {
		return &Lock{f: f}, nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultLockTimeout)
		defer cancel()
	}
	done := make(chan error, 1)
	go func() { done <- flockRetry(int(f.Fd())) }()
	select {
	case err := <-done:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		return &Lock{f: f}, nil
	case <-ctx.Done():
		// The flock stays pending: close the file once it returns, which
		// releases the lock at once if it was granted meanwhile.
		go func() { <-done; f.Close() }()
		return nil, fmt.Errorf("lock %s: %w", path, ErrLockTimeout)
	}
}

func flockRetry(fd int) error {
	for {
		err := unix.Flock(fd, unix.LOCK_EX)
		if err != unix.EINTR {
			return err
		}
	}
}

// Unlock releases the lock. Safe on nil.
func (l *Lock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing drops the flock
	l.f = nil
	return err
}

// BootID is this boot's random ID, used to tell state of an earlier boot.
// It is read once per process: the state store and the address store both
// ask for it.
var BootID = sync.OnceValues(func() (string, error) {
	fd, err := unix.Open("/proc/sys/kernel/random/boot_id", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", &os.PathError{Op: "open", Path: "/proc/sys/kernel/random/boot_id", Err: err}
	}
	defer unix.Close(fd)
	var buf [64]byte
	n, err := unix.Read(fd, buf[:])
	if err != nil {
		return "", &os.PathError{Op: "read", Path: "/proc/sys/kernel/random/boot_id", Err: err}
	}
	return strings.TrimSpace(string(buf[:n])), nil
})

// BootTime is when this boot began, from /proc/stat's btime.
func BootTime() (time.Time, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			sec, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return time.Time{}, err
			}
			return time.Unix(sec, 0), nil
		}
	}
	return time.Time{}, errors.New("no btime in /proc/stat")
}
