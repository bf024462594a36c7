// Package eintr retries system calls that a signal interrupted.
package eintr

import (
	"errors"

	"golang.org/x/sys/unix"
)

// Retry repeats call while it fails with EINTR: the Go runtime signals its
// threads (preemption), and the kernel does not restart every call (one
// on a socket with a timeout, a flock, a read of some files).
func Retry[T any](call func() (T, error)) (T, error) {
	for {
		v, err := call()
		if !errors.Is(err, unix.EINTR) {
			return v, err
		}
	}
}
