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

// WriteAtomic replaces path with data: written to a temporary file in the
// same directory, then renamed, so readers see the old or the new content.
func WriteAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := writeTemp(path, data, perm)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// CreateExclusive creates path with data only if it does not exist
// (os.ErrExist otherwise). The content is complete the moment the name
// appears: it is written aside and hard-linked into place.
func CreateExclusive(path string, data []byte, perm os.FileMode) error {
	tmp, err := writeTemp(path, data, perm)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create %s: %w", path, os.ErrExist)
		}
		return err
	}
	return nil
}

func writeTemp(path string, data []byte, perm os.FileMode) (string, error) {
	dir, base := filepath.Split(path)
	f, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return "", err
	}
	name := f.Name()
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(name)
		return "", err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		os.Remove(name)
		return "", err
	}
	if err := f.Close(); err != nil {
		os.Remove(name)
		return "", err
	}
	return name, nil
}

// IsTemp reports whether a directory entry is a temporary file of
// WriteAtomic or CreateExclusive (left behind only by a crash).
func IsTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp")
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
func BootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
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
