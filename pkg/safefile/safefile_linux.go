// Package safefile reads, writes and locks small state files without
// following symlinks or trusting their size, and without leaving partial
// content behind a crash.
package safefile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/eintr"
)

// MaxSize bounds what Read returns; state files are small.
const MaxSize = 1 << 20

// ErrTooLarge is returned for a file larger than MaxSize.
var ErrTooLarge = errors.New("file too large")

// ErrNotRegular is returned for a symlink, directory or device.
var ErrNotRegular = errors.New("not a regular file")

// Read returns the content of a regular file, refusing symlinks (at the
// last component), special files and files over MaxSize.
//
// This package works on plain file descriptors: an os.File tries to
// register every file with the poller (five system calls more, each time
// refused for a regular file), and a call reads and writes a dozen.
func Read(path string) ([]byte, error) { return ReadAt(unix.AT_FDCWD, path, MaxSize) }

// ReadAt is Read of name relative to the directory dirfd, refusing more
// than max bytes (ErrTooLarge). A missing file is an *os.PathError that
// errors.Is os.ErrNotExist.
func ReadAt(dirfd int, name string, max int) ([]byte, error) {
	fd, err := openAt(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("read %s: %w", name, ErrNotRegular)
		}
		return nil, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &os.PathError{Op: "stat", Path: name, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("read %s: %w", name, ErrNotRegular)
	}
	if st.Size > int64(max) {
		return nil, fmt.Errorf("read %s: %w (%d bytes)", name, ErrTooLarge, st.Size)
	}
	// One byte more than the size: a file that grew is read to its end.
	data := make([]byte, 0, st.Size+1)
	for len(data) <= max {
		if len(data) == cap(data) {
			data = slices.Grow(data, 512)
		}
		n, err := eintr.Retry(func() (int, error) { return unix.Read(fd, data[len(data):cap(data)]) })
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: name, Err: err}
		}
		if n == 0 {
			return data, nil
		}
		data = data[:len(data)+n]
	}
	return nil, fmt.Errorf("read %s: %w", name, ErrTooLarge)
}

// open is open(2) with os.OpenFile's errors, retried on EINTR.
func open(path string, flags int, perm uint32) (int, error) {
	return openAt(unix.AT_FDCWD, path, flags, perm)
}

// openAt is open relative to the directory dirfd.
func openAt(dirfd int, path string, flags int, perm uint32) (int, error) {
	fd, err := eintr.Retry(func() (int, error) { return unix.Openat(dirfd, path, flags, perm) })
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return fd, nil
}

// writeAll writes data to fd.
func writeAll(fd int, name string, data []byte) error {
	for len(data) > 0 {
		n, err := eintr.Retry(func() (int, error) { return unix.Write(fd, data) })
		if err != nil {
			return &os.PathError{Op: "write", Path: name, Err: err}
		}
		data = data[n:]
	}
	return nil
}

// WriteAtomic replaces path with data, so readers see the old or the new
// content. The data is written to an unnamed file (O_TMPFILE), linked in
// as TempName(path) and renamed over path: a process killed while writing
// leaves nothing, and one killed between link and rename leaves only
// TempName(path), which the next write of path (or RemoveWithTemp) takes
// away. Writers of one path must not run concurrently.
func WriteAtomic(path string, data []byte, perm os.FileMode) error {
	fd, err := writeUnnamed(path, data, perm)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	tmp := TempName(path)
	err = linkFile(fd, path, tmp)
	if errors.Is(err, os.ErrExist) {
		os.Remove(tmp) // left by a writer killed before its rename
		err = linkFile(fd, path, tmp)
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
	fd, err := writeUnnamed(path, data, perm)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := linkFile(fd, path, path); err != nil {
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
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) && !goneReadOnly(path, err) {
		return err
	}
	return nil
}

// goneReadOnly reports whether err, from removing path, only says the
// file system is read-only while path does not exist: unlink(2) checks
// the mount before the name, and a DEL of something never added (or
// already deleted) must not fail there.
func goneReadOnly(path string, err error) bool {
	if !errors.Is(err, unix.EROFS) {
		return false
	}
	_, lerr := os.Lstat(path)
	return errors.Is(lerr, os.ErrNotExist)
}

// writeUnnamed writes data to an unnamed file in path's directory and
// returns its descriptor.
func writeUnnamed(path string, data []byte, perm os.FileMode) (int, error) {
	dir := filepath.Dir(path)
	fd, err := open(dir, unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, uint32(perm.Perm()))
	if err != nil {
		return -1, err
	}
	if err := writeAll(fd, dir, data); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Fchmod(fd, uint32(perm.Perm())); err != nil { // O_TMPFILE's mode passes the umask
		unix.Close(fd)
		return -1, &os.PathError{Op: "chmod", Path: dir, Err: err}
	}
	return fd, nil
}

// ProbeSize is about a record's size: writing it needs a data block, as a
// record does, which an empty file or access(2) never asks for.
const ProbeSize = 512

// ProbeSpace writes ProbeSize bytes to an unnamed file in dir and drops it,
// so a full disk answers ENOSPC as every record written there would.
// Nothing is left, even by a crash.
func ProbeSpace(dir string) error {
	fd, err := writeUnnamed(filepath.Join(dir, "probe"), make([]byte, ProbeSize), 0o600)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

// linkFile gives the unnamed file fd (made for target) the name path
// (EEXIST if taken).
// Equivalent to: linkat(/proc/self/fd/N, path, AT_SYMLINK_FOLLOW)
func linkFile(fd int, target, path string) error {
	err := unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), unix.AT_FDCWD, path, unix.AT_SYMLINK_FOLLOW)
	if err != nil {
		return &os.LinkError{Op: "link", Old: "unnamed file for " + target, New: path, Err: err}
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
type Lock struct {
	fd   int
	held bool
}

// ErrLockTimeout is returned when a lock is not granted in time (code 11).
var ErrLockTimeout = cnierr.New(cnierr.TryAgainLater, "timed out waiting for a lock")

// DefaultLockTimeout is how long Acquire waits when ctx has no deadline.
const DefaultLockTimeout = 60 * time.Second

// Acquire takes an exclusive flock on path, creating it if needed. It
// waits until ctx ends (or DefaultLockTimeout without a deadline).
//
// The file is opened read-only: flock needs no write access, and O_CREAT
// of an existing file works on a read-only mount, so a DEL with nothing
// to remove there still gets its lock.
func Acquire(ctx context.Context, path string) (*Lock, error) {
	fd, err := open(path, unix.O_RDONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err == nil {
		return &Lock{fd: fd, held: true}, nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultLockTimeout)
		defer cancel()
	}
	done := make(chan error, 1)
	go func() { done <- flockRetry(fd) }()
	select {
	case err := <-done:
		if err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		return &Lock{fd: fd, held: true}, nil
	case <-ctx.Done():
		// The flock stays pending: close the file once it returns, which
		// releases the lock at once if it was granted meanwhile.
		go func() { <-done; unix.Close(fd) }()
		return nil, fmt.Errorf("lock %s: %w", path, ErrLockTimeout)
	}
}

func flockRetry(fd int) error {
	_, err := eintr.Retry(func() (struct{}, error) { return struct{}{}, unix.Flock(fd, unix.LOCK_EX) })
	return err
}

// Unlock releases the lock. Safe on nil.
func (l *Lock) Unlock() error {
	if l == nil || !l.held {
		return nil
	}
	l.held = false
	return unix.Close(l.fd) // closing drops the flock
}

// BootID is this boot's random ID, used to tell state of an earlier boot.
// It is read once per process: the state store and the address store both
// ask for it.
func BootID() (string, error) {
	bootOnce.Do(func() { bootID, bootErr = readBootID() })
	return bootID, bootErr
}

// Zero values, not an initialised sync.OnceValues: an initialiser would
// link this package's code into every plugin that imports it.
var (
	bootOnce sync.Once
	bootID   string
	bootErr  error
)

func readBootID() (string, error) {
	b, err := Read("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b)), err
}

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
