package ipam

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/eintr"
	"github.com/netdrivers/netdrivers/pkg/safefile"
)

// Raw-syscall file helpers for the hot path: every call of the allocator
// touches a dozen small files, and the os package's poller registration
// and temp-file naming would cost more than the work itself.

// readAt reads a regular file relative to dirfd without following a
// symlink, refusing special files and more than max bytes: those are
// garbage in the store, not store failures.
func readAt(dirfd int, name string, max int) ([]byte, error) {
	data, err := safefile.ReadAt(dirfd, name, max)
	switch {
	case err == nil:
		return data, nil
	case errors.Is(err, unix.ENOENT):
		return nil, errNoEntry
	case errors.Is(err, safefile.ErrNotRegular), errors.Is(err, safefile.ErrTooLarge):
		return nil, fmt.Errorf("%w: %w", errGarbage, err)
	}
	return nil, storeErr("%w", err)
}

// writeInPlace makes name (relative to dirfd) hold exactly data by
// rewriting the existing file's bytes: in the steady state no file is
// created, renamed or truncated to zero (on ext4 each costs a journal
// transaction, and rename-over and truncate-to-zero an auto_da_alloc
// flush, together more than the rest of a call). A symlink, special file
// or file with other hard links in its place is replaced by a new file,
// never written through. It is not atomic: the caller's lock keeps readers
// out, and the index's dirty state makes a torn file cause a rebuild.
func writeInPlace(dirfd int, name string, data []byte) error {
	for attempt := 0; ; attempt++ {
		fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o600)
		if err == nil {
			var st unix.Stat_t
			if err = unix.Fstat(fd, &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink == 1 {
				err = pwriteAll(fd, data)
				if err == nil && st.Size > int64(len(data)) {
					err = unix.Ftruncate(fd, int64(len(data)))
				}
				if cerr := unix.Close(fd); err == nil {
					err = cerr
				}
				if err != nil {
					return fmt.Errorf("write %s: %w", name, err)
				}
				return nil
			}
			unix.Close(fd)
			if err != nil {
				return fmt.Errorf("stat %s: %w", name, err)
			}
		} else if !errors.Is(err, unix.ELOOP) && !errors.Is(err, unix.ENXIO) && !errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("open %s: %w", name, err)
		}
		if attempt > 0 {
			return fmt.Errorf("write %s: still not a plain file after replacing it", name)
		}
		if err := unix.Unlinkat(dirfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("replace %s: %w", name, err)
		}
	}
}

func pwriteAll(fd int, data []byte) error {
	for off := 0; off < len(data); {
		n, err := eintr.Retry(func() (int, error) { return unix.Pwrite(fd, data[off:], int64(off)) })
		if err != nil {
			return err
		}
		off += n
	}
	return nil
}

// lockAt takes the reference's lock: an exclusive flock on <dir>/lock
// (go-filemutex takes flock(LOCK_EX) on the same file, so the two binaries
// exclude each other). A symlink in its place is refused. Uncontended, it
// costs two syscalls; otherwise safefile.Acquire waits with the deadline.
func lockAt(ctx context.Context, dirfd int, dir string) (release func(), err error) {
	fd, err := unix.Openat(dirfd, lockName, unix.O_RDONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, storeErr("open %s/%s: %w", dir, lockName, err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err == nil {
		return func() { unix.Close(fd) }, nil
	}
	unix.Close(fd)
	l, err := safefile.Acquire(ctx, dir+"/"+lockName)
	if err != nil {
		if errors.Is(err, safefile.ErrLockTimeout) {
			return nil, err
		}
		return nil, storeErr("lock %s: %w", dir, err)
	}
	return func() { l.Unlock() }, nil
}
