// Package netns opens, identifies and enters network namespaces.
package netns

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
)

var (
	ErrNotExist = cnierr.New(cnierr.InvalidNetNS, "network namespace does not exist")
	ErrNotNetNS = cnierr.New(cnierr.InvalidNetNS, "not a network namespace")
	ErrHostNS   = cnierr.New(cnierr.InvalidNetNS, "is the plugin's own (host) network namespace")
)

// ID identifies a namespace independently of the path it was opened by.
type ID struct{ Dev, Ino uint64 }

func (id ID) String() string { return fmt.Sprintf("%d:%d", id.Dev, id.Ino) }

// Handle is an open network namespace with a netlink handle bound to it.
// Kernel objects are changed through NL, never by switching threads; Do
// is for sysctls and /proc.
type Handle struct {
	Path string
	NL   netlinksafe.Handle
	file *os.File
	id   ID
	self bool
	mu   sync.Mutex // guards the lazy NL for callers on several goroutines
}

// Open opens the network namespace at path and checks that it is one.
func Open(path string) (*Handle, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("open %q: %w", path, ErrNotExist)
		}
		return nil, cnierr.Wrap(cnierr.InvalidNetNS, fmt.Errorf("open %q: %w", path, err))
	}
	h, err := fromFile(path, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return h, nil
}

// Self opens the namespace the calling thread runs in: the plugin's host.
func Self() (*Handle, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	path := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
	h, err := Open(path)
	if err != nil {
		return nil, err
	}
	h.self = true
	return h, nil
}

func fromFile(path string, f *os.File) (*Handle, error) {
	fd := int(f.Fd())
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return nil, cnierr.Wrap(cnierr.InvalidNetNS, fmt.Errorf("statfs %q: %w", path, err))
	}
	if sfs.Type != unix.NSFS_MAGIC {
		return nil, fmt.Errorf("%q: %w", path, ErrNotNetNS)
	}
	if t, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE); err != nil || t != unix.CLONE_NEWNET {
		return nil, fmt.Errorf("%q is a namespace of another type: %w", path, ErrNotNetNS)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, cnierr.Wrap(cnierr.InvalidNetNS, fmt.Errorf("stat %q: %w", path, err))
	}
	return &Handle{Path: path, file: f, id: ID{Dev: st.Dev, Ino: st.Ino}}, nil
}

// Netlink returns the namespace-bound netlink handle, opening it on first use.
func (h *Handle) Netlink() (netlinksafe.Handle, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.NL.Handle != nil {
		return h.NL, nil
	}
	var (
		nl  netlinksafe.Handle
		err error
	)
	if h.self {
		nl, err = netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	} else {
		nl, err = netlinksafe.NewHandleAt(vnetns.NsHandle(h.Fd()), unix.NETLINK_ROUTE)
	}
	if err != nil {
		return netlinksafe.Handle{}, fmt.Errorf("netlink socket in %q: %w", h.Path, err)
	}
	h.NL = nl
	return nl, nil
}

// Link looks up a link by name inside the namespace.
func (h *Handle) Link(name string) (netlink.Link, error) {
	nl, err := h.Netlink()
	if err != nil {
		return nil, err
	}
	return nl.LinkByName(name)
}

// Fd is the namespace file descriptor, valid until Close.
func (h *Handle) Fd() int { return int(h.file.Fd()) }

// ID is the namespace's device and inode.
func (h *Handle) ID() ID { return h.id }

// IsSelf reports whether h was opened by Self.
func (h *Handle) IsSelf() bool { return h.self }

// Close releases the netlink handle and the namespace file.
func (h *Handle) Close() error {
	if h == nil {
		return nil
	}
	h.NL.Close()
	h.NL = netlinksafe.Handle{}
	return h.file.Close()
}

// Do runs fn on an OS thread that has entered h, for sysctls and /proc.
// The thread is discarded if it cannot switch back.
func (h *Handle) Do(fn func() error) error {
	if h.self {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid()))
		if err != nil {
			errc <- fmt.Errorf("open current namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(h.Fd(), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter %q: %w", h.Path, err)
			return
		}
		err = fn()
		if serr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); serr != nil {
			errc <- errors.Join(err, fmt.Errorf("return from %q: %w", h.Path, serr))
			return // thread stays locked and dies with the goroutine
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// Execute sends req in h and returns the answers of type resType (every
// answer when 0), for requests vishvananda/netlink has no call for.
func (h *Handle) Execute(req *nl.NetlinkRequest, resType uint16) (msgs [][]byte, err error) {
	err = h.Do(func() (err error) { msgs, err = req.Execute(unix.NETLINK_ROUTE, resType); return err })
	return msgs, err
}

// IDOf returns the namespace identity of path without keeping it open.
func IDOf(path string) (ID, error) {
	h, err := Open(path)
	if err != nil {
		return ID{}, err
	}
	defer h.Close()
	return h.ID(), nil
}

// SelfID is the identity of the calling thread's network namespace.
func SelfID() (ID, error) {
	h, err := Self()
	if err != nil {
		return ID{}, err
	}
	defer h.Close()
	return h.ID(), nil
}
