package reexec

import (
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/eintr"
)

// A detached helper serves later plugin calls of its namespace on an
// abstract unix socket (SOCK_SEQPACKET, one request and a 1-byte ack per
// connection). Abstract names belong to the network namespace and anyone
// in it can bind one first, so both sides check the other is root.

// Dial connects to the helper listening on addr in the calling thread's
// namespace and checks that it runs as root. A wedged helper costs a
// call one second (send and receive timeouts), then the caller's fallback.
func Dial(addr string) (int, error) {
	// A connect interrupted by a signal goes on unseen: start over.
	return eintr.Retry(func() (int, error) { return dial(addr) })
}

func dial(addr string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := connectRoot(fd, addr); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func connectRoot(fd int, addr string) error {
	tv := unix.Timeval{Sec: 1}
	for _, opt := range []int{unix.SO_SNDTIMEO, unix.SO_RCVTIMEO} {
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, opt, &tv); err != nil {
			return err
		}
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: addr}); err != nil {
		return err
	}
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return err
	}
	if cred.Uid != 0 {
		return fmt.Errorf("%s is held by uid %d, not root", addr, cred.Uid)
	}
	return nil
}

// Send writes one request on fd.
func Send(fd int, msg, oob []byte) error {
	_, err := eintr.Retry(func() (struct{}, error) { return struct{}{}, unix.Sendmsg(fd, msg, oob, nil, 0) })
	return err
}

// Ack waits for the helper's acknowledgement on fd.
func Ack(fd int) error {
	var ack [1]byte
	n, err := eintr.Retry(func() (int, error) { return unix.Read(fd, ack[:]) })
	if err != nil {
		return err
	}
	if n != 1 || ack[0] != AckByte {
		return errors.New("no acknowledgement")
	}
	return nil
}

// AckByte is what a helper answers a request it took.
const AckByte = 'k'

// Admit readies c, accepted by a helper, for its one request: the
// one-second deadline Dial gives the caller's side, and only a peer that
// runs as root (only root may have a helper act for it).
func Admit(c *net.UnixConn) bool {
	if c.SetDeadline(time.Now().Add(time.Second)) != nil {
		return false
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	return err == nil && cred != nil && cred.Uid == 0
}
