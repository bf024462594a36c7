package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// store is one network's directory of the host-local store, opened and
// locked for one operation. Every method runs under the lock.
type store struct {
	dir    string // <dataDir>/<network>
	fd     int    // the open directory; entries are reached relative to it
	ifd    int    // the open index directory, or -1
	unlock func()
	boot   string // this boot's ID
	conf   *Config

	tmp      int    // an unnamed file holding tmpOwner's entry, or -1
	tmpOwner string // content of tmp
	tmpPath  string // set when tmp has a name (no O_TMPFILE support)

	trusted     bool                 // the index matched the directory when the call began
	changed     bool                 // this call changed the directory or the index: commit
	dirChanged  bool                 // this call created or removed an entry
	markedDirty bool                 // the state says "dirty" (see willWriteIndex)
	indexErr    error                // an index write failed: the next call must rebuild
	buckets     map[string][]*record // index buckets read (or written) by this call
}

var errNoEntry = errors.New("no such address entry")

// openStore locks <dataDir>/<network>. With create false, a store that
// does not exist yet gives (nil, nil): nobody holds anything.
func openStore(ctx context.Context, c *Config, boot string, create bool) (*store, error) {
	dir := filepath.Join(c.DataDir, c.network)
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) && create {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, storeErr("create %s: %w", dir, err)
		}
		fd, err = unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	}
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, storeErr("open %s: %w", dir, err)
	}
	unlock, err := lockAt(ctx, fd, dir)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &store{dir: dir, fd: fd, ifd: -1, unlock: unlock, boot: boot, conf: c, tmp: -1}, nil
}

// close records the index state when this call changed something, then
// unlocks.
func (s *store) close() {
	if s == nil {
		return
	}
	if s.changed {
		s.commit()
	}
	s.dropTmp()
	if s.ifd >= 0 {
		unix.Close(s.ifd)
	}
	unix.Close(s.fd)
	s.unlock()
}

func storeErr(format string, args ...any) error {
	return fmt.Errorf("%w: %w", ErrStore, fmt.Errorf(format, args...))
}

// reserve creates the address file of ip holding o, only if no file of
// that name exists (false then). The content is complete before the name
// appears: it is written into an unnamed file (O_TMPFILE) that is then
// linked into place, so a crash never leaves an empty or partial entry.
func (s *store) reserve(ip netip.Addr, o owner) (bool, error) {
	content := string(o.content())
	if s.tmp < 0 || s.tmpOwner != content {
		s.dropTmp()
		if err := s.makeTmp(content); err != nil {
			return false, err
		}
	}
	name := ip.String()
	var err error
	if s.tmpPath != "" {
		err = unix.Linkat(unix.AT_FDCWD, s.tmpPath, s.fd, name, 0)
	} else {
		err = unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", s.tmp), s.fd, name, unix.AT_SYMLINK_FOLLOW)
		if errors.Is(err, unix.ENOENT) { // no /proc: needs CAP_DAC_READ_SEARCH instead
			err = unix.Linkat(s.tmp, "", s.fd, name, unix.AT_EMPTY_PATH)
		}
	}
	switch {
	case errors.Is(err, unix.EEXIST):
		return false, nil
	case err != nil:
		return false, storeErr("create %s/%s: %w", s.dir, name, err)
	}
	s.changedDir()
	s.dropTmp() // linked: the next reservation needs a file of its own
	return true, nil
}

func (s *store) makeTmp(content string) error {
	fd, err := unix.Openat(s.fd, ".", unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EINVAL) {
		return s.makeNamedTmp(content) // file systems without O_TMPFILE
	}
	if err != nil {
		return storeErr("create unnamed file in %s (O_TMPFILE): %w", s.dir, err)
	}
	if _, err := unix.Write(fd, []byte(content)); err != nil {
		unix.Close(fd)
		return storeErr("write unnamed file in %s: %w", s.dir, err)
	}
	s.tmp, s.tmpOwner = fd, content
	return nil
}

// makeNamedTmp writes the entry aside where no walk of the reference
// binary looks: <dataDir>/.netdrivers-tmp/<network>.entry (no network can
// be named ".netdrivers-tmp"), used only under this network's lock, so a
// crash's leftover is simply overwritten by the next call.
func (s *store) makeNamedTmp(content string) error {
	dir := filepath.Join(filepath.Dir(s.dir), ".netdrivers-tmp")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return storeErr("create %s: %w", dir, err)
	}
	path := filepath.Join(dir, filepath.Base(s.dir)+".entry")
	os.Remove(path)
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return storeErr("create %s: %w", path, err)
	}
	if err := pwriteAll(fd, []byte(content)); err != nil {
		unix.Close(fd)
		os.Remove(path)
		return storeErr("write %s: %w", path, err)
	}
	s.tmp, s.tmpOwner, s.tmpPath = fd, content, path
	return nil
}

func (s *store) dropTmp() {
	if s.tmp >= 0 {
		unix.Close(s.tmp)
		s.tmp, s.tmpOwner = -1, ""
	}
	if s.tmpPath != "" {
		os.Remove(s.tmpPath)
		s.tmpPath = ""
	}
}

// readEntry returns the owner named by ip's address file: errNoEntry when
// there is none, errGarbage (wrapped) for a symlink, a special file, an
// oversized or unparsable one.
func (s *store) readEntry(ip netip.Addr) (owner, error) {
	data, err := s.readSmall(ip.String(), maxEntrySize)
	if err != nil {
		return owner{}, err
	}
	return parseEntry(data)
}

// readSmall reads a regular file of the directory without following a
// symlink, refusing more than max bytes.
func (s *store) readSmall(name string, max int) ([]byte, error) {
	return readAt(s.fd, name, max)
}

// remove deletes ip's address file (a symlink itself, never its target);
// a missing file is success.
func (s *store) remove(ip netip.Addr) error {
	return s.removeName(ip.String())
}

func (s *store) removeName(name string) error {
	err := unix.Unlinkat(s.fd, name, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return storeErr("remove %s/%s: %w", s.dir, name, err)
	}
	s.changedDir()
	return nil
}

// lastReserved is the content of last_reserved_ip.<set>, or invalid.
func (s *store) lastReserved(set int) netip.Addr {
	data, err := s.readSmall(lastIPPrefix+strconv.Itoa(set), 64)
	if err != nil {
		return netip.Addr{}
	}
	ip, err := parseAddr(strings.TrimSpace(string(data)))
	if err != nil {
		return netip.Addr{}
	}
	return ip
}

// setLastReserved replaces last_reserved_ip.<set> (by rename: a symlink in
// its place is replaced, not followed).
func (s *store) setLastReserved(set int, ip netip.Addr) error {
	s.changed = true // not part of the index: no dirty marking needed
	if err := writeInPlace(s.fd, lastIPPrefix+strconv.Itoa(set), []byte(ip.String())); err != nil {
		return storeErr("%s: %w", s.dir, err)
	}
	return nil
}

// names lists the directory.
func (s *store) names() ([]string, error) {
	names, err := readDirNames(s.fd)
	if err != nil {
		return nil, storeErr("list %s: %w", s.dir, err)
	}
	return names, nil
}

// readDirNames lists the directory open at dirfd (through a fresh
// descriptor, so dirfd's offset is untouched).
func readDirNames(dirfd int) ([]string, error) {
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), ".")
	defer f.Close()
	return f.Readdirnames(-1)
}
