package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/state"
)

// ErrRebind is returned, wrapped with the reason, when a CNI_NETNS path
// must not be re-bound (code 103). Nothing has been changed then.
var ErrRebind = cnierr.New(cnierr.Rebind, "network namespace cannot be re-bound")

// Pin is a CNI_NETNS path found safe to re-bind: a pinned namespace file
// that nobody has entered yet. It keeps the pinned namespace open so a
// failed re-bind can be rolled back.
type Pin struct {
	Path  string // the mount point (symlinked directories resolved)
	Given string // the path as the runtime passed it
	ns    *Handle
}

// OpenPin decides whether path may be re-bound. It may when path is an
// nsfs bind mount of a network namespace (a mount point holding an nsfs
// inode, see checkMount: what
// `ip netns add`, Podman, containerd and CRI-O create before the container
// starts) whose namespace holds only lo and no process. Anything else is
// ErrRebind saying why: a /proc/<pid>/ns/net path (nerdctl's: the process
// already lives in that namespace and cannot be moved), a symlink, a file
// that is not a namespace mount, a namespace with interfaces besides lo
// (already configured) or with a process in it (it would stay behind).
//
// The process scan (/proc/*/task/*/ns/net) is best-effort: a process that
// enters the namespace between the scan and the re-bind stays in the old
// namespace. Runtimes start the container only after ADD returns, so the
// window is the plugin's own few milliseconds. A task seen in the
// namespace gets transientWait to leave (a concurrent plugin's thread).
func OpenPin(path string) (_ *Pin, err error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("%w: %q is not an absolute path", ErrRebind, path)
	}
	clean := filepath.Clean(path)
	if clean == "/proc" || strings.HasPrefix(clean, "/proc/") {
		return nil, fmt.Errorf("%w: %s is a /proc path of a running process, which lives in that namespace already and cannot be moved; "+
			"runtimes that pin the namespace as a file before the container starts (Podman, containerd's CRI, CRI-O, cnitool) can use this network, nerdctl cannot", ErrRebind, path)
	}
	dir, err := filepath.EvalSymlinks(filepath.Dir(clean))
	if err != nil {
		return nil, fmt.Errorf("%w: resolve %s: %w", ErrRebind, filepath.Dir(clean), err)
	}
	real := filepath.Join(dir, filepath.Base(clean))
	if strings.HasPrefix(real, "/proc/") {
		return nil, fmt.Errorf("%w: %s resolves to %s, a /proc path of a running process", ErrRebind, path, real)
	}
	st, err := os.Lstat(real)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRebind, err)
	}
	if st.Mode()&os.ModeSymlink != 0 {
		return nil, fmt.Errorf("%w: %s is a symbolic link, not a pinned namespace file", ErrRebind, path)
	}
	h, err := Open(real)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRebind, err)
	}
	defer func() {
		if err != nil {
			h.Close()
		}
	}()
	if err := checkMount(real, h.ID()); err != nil {
		return nil, fmt.Errorf("%w: %s %w", ErrRebind, path, err)
	}
	if err := checkEmpty(h); err != nil {
		return nil, fmt.Errorf("%w: the namespace at %s %w", ErrRebind, path, err)
	}
	if err := checkUnentered(h.ID()); err != nil {
		return nil, fmt.Errorf("%w: the namespace at %s %w", ErrRebind, path, err)
	}
	return &Pin{Path: real, Given: path, ns: h}, nil
}

// Prepare judges a CNI_NETNS path for a re-bind onto target: cur is the
// namespace opened from path (nil with openErr when that failed). When
// path already shows target it returns a nil Pin: nothing to do. Otherwise
// it returns OpenPin's verdict; every refusal is ErrRebind (code 103).
func Prepare(path string, cur *Handle, openErr error, target ID) (*Pin, error) {
	if cur != nil && cur.ID() == target {
		return nil, nil
	}
	if cur == nil {
		return nil, fmt.Errorf("%w: CNI_NETNS %q: %w", ErrRebind, path, openErr)
	}
	return OpenPin(path)
}

// ID is the identity of the namespace pinned at the path before Rebind.
func (p *Pin) ID() ID { return p.ns.ID() }

// Close releases the pinned namespace (the runtime's own pin remains).
func (p *Pin) Close() error {
	if p == nil {
		return nil
	}
	return p.ns.Close()
}

// Rebind makes the path show target instead, in the plugin's mount
// namespace, so that a container the runtime later starts "in" the path
// joins target. Where the kernel can (6.5+), the switch is atomic: target
// is mounted beneath the pinned namespace, whose mount is then lazily
// removed (runtimes keep the file open, so a plain unmount fails with
// EBUSY): whoever opens the path meanwhile (containerd runs its loopback
// plugin on it concurrently) gets one namespace or the other. On older
// kernels the pinned mount goes first and target is bound after it. On
// failure the original namespace is put back. The marker in s lets DEL and
// GC finish a switch a kill cut in half (Repair).
// Equivalent to: mount --beneath --bind /proc/self/fd/TARGET PATH && umount -l PATH
func (p *Pin) Rebind(target *Handle, s *state.Store, key netconf.Key) (err error) {
	if err := s.Put(markPath(key), &rebindMark{Path: p.Path, Network: key.Network}); err != nil {
		return err
	}
	defer func() {
		if derr := s.Del(markPath(key)); err == nil {
			err = derr
		}
	}()
	done, err := p.switchBeneath(target)
	if err != nil {
		return cnierr.Wrap(cnierr.Rebind, err)
	}
	if !done {
		if err := p.switchOver(target); err != nil {
			return cnierr.Wrap(cnierr.Rebind, err)
		}
	}
	got, err := IDOf(p.Path)
	if err == nil && got != target.ID() {
		err = fmt.Errorf("%s shows namespace %s after the bind, want %s", p.Path, got, target.ID())
	}
	if err != nil {
		return cnierr.Wrap(cnierr.Rebind, errors.Join(err, p.restore()))
	}
	return nil
}

// moveMountBeneath is MOVE_MOUNT_BENEATH (linux/mount.h, kernel 6.5).
const moveMountBeneath = 0x200

// switchBeneath mounts target beneath the pinned namespace and removes the
// latter. It reports false, changing nothing, where the kernel lacks it.
func (p *Pin) switchBeneath(target *Handle) (bool, error) {
	tree, err := unix.OpenTree(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", target.Fd()), unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("clone a mount of %s: %w", target.Path, err)
	}
	defer unix.Close(tree)
	err = unix.MoveMount(tree, "", unix.AT_FDCWD, p.Path, unix.MOVE_MOUNT_F_EMPTY_PATH|moveMountBeneath)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("mount %s beneath %s: %w", target.Path, p.Path, err)
	}
	if err := unix.Unmount(p.Path, unix.MNT_DETACH); err != nil {
		return true, fmt.Errorf("unmount the pinned namespace from %s: %w", p.Path, err)
	}
	return true, nil
}

// switchOver is the switch for kernels without MOVE_MOUNT_BENEATH: for an
// instant the path shows no namespace.
func (p *Pin) switchOver(target *Handle) error {
	if err := unix.Unmount(p.Path, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount %s: %w", p.Path, err)
	}
	if err := bindFd(target.Fd(), p.Path); err != nil {
		err = fmt.Errorf("bind %s onto %s: %w", target.Path, p.Path, err)
		if rerr := bindFd(p.ns.Fd(), p.Path); rerr != nil {
			err = errors.Join(err, fmt.Errorf("rollback: mount the original namespace back on %s: %w", p.Path, rerr))
		}
		return err
	}
	return nil
}

// restore puts the original namespace back after a bad re-bind.
func (p *Pin) restore() error {
	if err := unix.Unmount(p.Path, unix.MNT_DETACH); err != nil && err != unix.EINVAL {
		return fmt.Errorf("rollback: unmount %s: %w", p.Path, err)
	}
	if err := bindFd(p.ns.Fd(), p.Path); err != nil {
		return fmt.Errorf("rollback: mount the original namespace back on %s: %w", p.Path, err)
	}
	return nil
}

func bindFd(fd int, path string) error {
	return unix.Mount(fmt.Sprintf("/proc/self/fd/%d", fd), path, "none", unix.MS_BIND, "")
}

// checkMount requires path to be a mount point of namespace id. Open has
// already found an nsfs inode there, which outside /proc only a bind mount
// can provide. statx's mount ID (the path's differs from its directory's)
// answers in O(1); kernels without STATX_MNT_ID (< 5.8) read
// /proc/self/mountinfo instead, O(mounts): a busy node has thousands.
func checkMount(path string, id ID) error {
	var f, d unix.Statx_t
	ferr := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &f)
	derr := unix.Statx(unix.AT_FDCWD, filepath.Dir(path), 0, unix.STATX_MNT_ID, &d)
	if ferr == nil && derr == nil && f.Mask&d.Mask&unix.STATX_MNT_ID != 0 {
		switch {
		case f.Mnt_id == d.Mnt_id:
			return errNotMountPoint
		case f.Ino != id.Ino:
			return fmt.Errorf("changed while it was checked (now inode %d, was %d)", f.Ino, id.Ino)
		}
		return nil
	}
	return checkMountInfo(path, id)
}

// checkMountInfo is checkMount by /proc/self/mountinfo.
func checkMountInfo(path string, id ID) error {
	top, err := findMount(path)
	if err != nil {
		return fmt.Errorf("cannot be checked: %w", err)
	}
	want := fmt.Sprintf("net:[%d]", id.Ino)
	switch {
	case top == nil:
		return errNotMountPoint
	case top.FSType != "nsfs":
		return fmt.Errorf("is a %s mount, not an nsfs bind mount of a network namespace", top.FSType)
	case top.Root != want:
		return fmt.Errorf("is a mount of %s, not of the namespace opened there (%s)", top.Root, want)
	}
	return nil
}

var errNotMountPoint = errors.New("is not a mount point: only a namespace pinned by a bind mount (ip netns add, runtimes' netns files) can be re-bound")

// fallbackTunnels are devices the kernel adds to every namespace when
// their module is loaded; down and unconfigured, they carry nothing.
var fallbackTunnels = map[string]bool{
	"tunl0": true, "sit0": true, "ip6tnl0": true, "gre0": true, "gretap0": true,
	"erspan0": true, "ip6gre0": true, "ip_vti0": true, "ip6_vti0": true,
}

// ignorable reports whether a link does not count as configuration.
func ignorable(l netlink.Link) bool {
	a := l.Attrs()
	return a.Name == "lo" || (fallbackTunnels[a.Name] && a.Flags&unix.IFF_UP == 0)
}

// checkEmpty requires h to hold no interface besides lo.
func checkEmpty(h *Handle) error {
	nl, err := h.Netlink()
	if err != nil {
		return fmt.Errorf("cannot be inspected: %w", err)
	}
	links, err := nl.LinkList()
	if err != nil {
		return fmt.Errorf("cannot be inspected: list links: %w", err)
	}
	var extra []string
	for _, l := range links {
		if !ignorable(l) {
			extra = append(extra, fmt.Sprintf("%s (%s)", l.Attrs().Name, l.Type()))
		}
	}
	if len(extra) > 0 {
		return fmt.Errorf("is already configured: it holds %s besides lo (another network of this container?)", strings.Join(extra, ", "))
	}
	return nil
}

// transientWait is how long a task seen in the namespace may take to
// leave before the namespace counts as entered: tools switch a thread in
// and out for microseconds (containerd runs its loopback network's plugin
// on the same path, concurrently with this one), a container stays.
var transientWait = 200 * time.Millisecond

// checkUnentered requires that no task lives in namespace id, scanning
// again every 5 ms for up to transientWait while one is seen there.
func checkUnentered(id ID) error {
	want := fmt.Sprintf("net:[%d]", id.Ino)
	deadline := time.Now().Add(transientWait)
	for {
		pid, err := taskIn(want)
		if err != nil || pid == "" {
			return err
		}
		if time.Now().After(deadline) {
			n, _ := strconv.Atoi(pid)
			return fmt.Errorf("already has a process in it: %s (pid %s), which a re-bind would leave behind", ProcessName(n), pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// taskIn returns the PID of a process with a task whose network namespace
// link reads want ("net:[INODE]"), or "". readlink of
// /proc/PID/task/TID/ns/net costs a third of a stat: about 6 µs a task.
func taskIn(want string) (string, error) {
	d, err := os.Open("/proc")
	if err != nil {
		return "", fmt.Errorf("cannot be checked for processes: %w", err)
	}
	pids, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return "", fmt.Errorf("cannot be checked for processes: %w", err)
	}
	self := strconv.Itoa(os.Getpid())
	buf := make([]byte, 64)
	for _, pid := range pids {
		if pid[0] < '0' || pid[0] > '9' || pid == self {
			continue
		}
		td, err := os.Open("/proc/" + pid + "/task")
		if err != nil {
			continue // exited
		}
		tids, _ := td.Readdirnames(-1)
		td.Close()
		for _, tid := range tids {
			n, err := unix.Readlink("/proc/"+pid+"/task/"+tid+"/ns/net", buf)
			if err == nil && string(buf[:n]) == want {
				return pid, nil
			}
		}
	}
	return "", nil
}

// ProcessName is the command name of process pid, or "process" once it
// has exited; error messages name the process that is in the way.
func ProcessName(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return "process"
	}
	return strings.TrimSpace(string(b))
}
