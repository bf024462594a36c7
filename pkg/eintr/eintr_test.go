package eintr

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRetry: EINTR is retried, any other outcome returned as it came.
func TestRetry(t *testing.T) {
	calls := 0
	v, err := Retry(func() (int, error) {
		calls++
		if calls < 3 {
			return -1, unix.EINTR
		}
		return 7, nil
	})
	if v != 7 || err != nil || calls != 3 {
		t.Errorf("Retry after two EINTRs = %d, %v after %d calls, want 7, nil after 3", v, err, calls)
	}
	calls = 0
	v, err = Retry(func() (int, error) { calls++; return 5, unix.EAGAIN })
	if v != 5 || !errors.Is(err, unix.EAGAIN) || calls != 1 {
		t.Errorf("Retry of EAGAIN = %d, %v after %d calls, want 5, EAGAIN after 1", v, err, calls)
	}
}
