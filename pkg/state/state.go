// Package state keeps the suite's boot-scoped state under one directory
// (/run/netdrivers, or $NETDRIVERS_STATE_DIR): host-port reservations,
// attachment records, joinns targets, shim reference counts. Each file
// belongs to one attachment and is removed by its DEL or by GC.
package state

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/jsonlite"
	"github.com/netdrivers/netdrivers/pkg/safefile"
)

// DefaultRoot is where state lives unless NETDRIVERS_STATE_DIR is set.
const DefaultRoot = "/run/netdrivers"

// EnvRoot names the variable that moves the state root (tests, odd hosts).
const EnvRoot = "NETDRIVERS_STATE_DIR"

// Store is an opened state root.
type Store struct{ root string }

// Root returns the configured state root.
func Root() string {
	if d := os.Getenv(EnvRoot); d != "" {
		return d
	}
	return DefaultRoot
}

// Open makes sure the root exists and belongs to this boot. A root left by
// an earlier boot (on hosts where /run is not a tmpfs) is emptied first.
func Open(ctx context.Context) (*Store, error) { return OpenAt(ctx, Root()) }

// OpenAt is Open on an explicit root (tests that run in parallel, each
// with its own state, cannot share one environment variable).
func OpenAt(ctx context.Context, root string) (*Store, error) {
	s := &Store{root: root}
	if err := os.MkdirAll(s.root, 0o700); err != nil {
		return nil, cnierr.Wrap(cnierr.IOFailure, fmt.Errorf("create state dir: %w", err))
	}
	boot, err := safefile.BootID()
	if err != nil {
		return nil, cnierr.Wrap(cnierr.IOFailure, fmt.Errorf("read boot id: %w", err))
	}
	if got, err := safefile.Read(s.Path("boot_id")); err == nil && string(got) == boot {
		return s, nil
	}
	l, err := s.Lock(ctx, "boot")
	if err != nil {
		return nil, err
	}
	defer l.Unlock()
	got, err := safefile.Read(s.Path("boot_id"))
	if err == nil && string(got) == boot {
		return s, nil
	}
	// Only a well-formed marker of another boot proves the state stale. A
	// missing, damaged or symlinked one proves nothing: wiping then could
	// drop live reservations, so the state is kept and the marker rewritten.
	if err == nil && isBootID(got) {
		if err := s.clear(); err != nil {
			return nil, err
		}
	}
	if err := safefile.WriteAtomic(s.Path("boot_id"), []byte(boot), 0o600); err != nil {
		return nil, cnierr.Wrap(cnierr.IOFailure, err)
	}
	return s, nil
}

// isBootID reports whether b has the form of a boot_id: lower-case
// 8-4-4-4-12 hex digits. (No regexp: the package would be in every binary.)
func isBootID(b []byte) bool {
	if len(b) != 36 {
		return false
	}
	for i, c := range b {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
				return false
			}
		}
	}
	return true
}

// clear removes everything of an earlier boot but the locks.
func (s *Store) clear() error {
	entries, err := os.ReadDir(s.root)
	if err != nil {
		return cnierr.Wrap(cnierr.IOFailure, err)
	}
	for _, e := range entries {
		if e.Name() == "locks" {
			continue
		}
		if err := os.RemoveAll(s.Path(e.Name())); err != nil {
			return cnierr.Wrap(cnierr.IOFailure, fmt.Errorf("clear state of an earlier boot: %w", err))
		}
	}
	return nil
}

// Path joins elem onto the root.
func (s *Store) Path(elem ...string) string {
	return filepath.Join(append([]string{s.root}, elem...)...)
}

// Lock takes the named state lock (<root>/locks/<name>).
func (s *Store) Lock(ctx context.Context, name string) (*safefile.Lock, error) {
	dir := s.Path("locks")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, cnierr.Wrap(cnierr.IOFailure, err)
	}
	return safefile.Acquire(ctx, filepath.Join(dir, name))
}

// Put stores v as JSON at rel, atomically, creating directories.
func (s *Store) Put(rel string, v any) error {
	data, err := jsonlite.Marshal(v)
	if err != nil {
		return err
	}
	p := s.Path(rel)
	for try := 0; ; try++ {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return cnierr.Wrap(cnierr.IOFailure, err)
		}
		err := safefile.WriteAtomic(p, data, 0o600)
		if err == nil {
			return nil
		}
		// A GC of another network may remove the directory, empty a moment
		// ago, between MkdirAll and the write: make it again.
		if !errors.Is(err, os.ErrNotExist) || try == 2 {
			return cnierr.Wrap(cnierr.IOFailure, fmt.Errorf("write state %s: %w", rel, err))
		}
	}
}

// ErrCorrupt marks a state file that exists but cannot be used.
var ErrCorrupt = errors.New("state file unreadable")

// Get loads rel into v. It reports false when rel does not exist, and
// ErrCorrupt for garbage, symlinks and oversized files.
func (s *Store) Get(rel string, v any) (bool, error) {
	p := s.Path(rel)
	data, err := safefile.Read(p)
	if errors.Is(err, os.ErrNotExist) {
		// A write killed between link and rename left only its staging
		// name: finish it, as List does, so the record is seen (and
		// cleaned up) instead of left stranded.
		tmp := safefile.TempName(p)
		if _, serr := os.Lstat(tmp); serr != nil {
			return false, nil
		}
		if _, err := safefile.Promote(filepath.Dir(tmp), filepath.Base(tmp)); err != nil {
			return false, cnierr.Wrap(cnierr.IOFailure, err)
		}
		if data, err = safefile.Read(p); errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
	}
	if err != nil {
		return true, fmt.Errorf("%s: %w: %w", rel, ErrCorrupt, err)
	}
	if err := jsonlite.Unmarshal(data, v); err != nil {
		return true, fmt.Errorf("%s: %w: %w", rel, ErrCorrupt, err)
	}
	return true, nil
}

// Del removes rel; a missing file is success.
func (s *Store) Del(rel string) error {
	if err := safefile.RemoveWithTemp(s.Path(rel)); err != nil {
		return cnierr.Wrap(cnierr.IOFailure, err)
	}
	return nil
}

// List returns the file names in dir rel, sorted. A staging name of an
// interrupted write is promoted to its final name. A missing directory is
// empty.
func (s *Store) List(rel string) ([]string, error) {
	entries, err := os.ReadDir(s.Path(rel))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, cnierr.Wrap(cnierr.IOFailure, err)
	}
	seen := map[string]bool{}
	var names []string
	for _, e := range entries {
		name := e.Name()
		if safefile.IsTemp(name) {
			// A write killed between link and rename: finish it, so the
			// record is seen (and cleaned up) instead of left stranded.
			if name, err = safefile.Promote(s.Path(rel), name); err != nil {
				return nil, cnierr.Wrap(cnierr.IOFailure, err)
			}
		}
		if !seen[name] {
			seen[name] = true
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names, nil
}

// probes numbers this process's probe files.
var probes atomic.Uint64

// OpenWritable is Open for STATUS: a store that cannot be opened or
// written is a node-wide fault (code 50).
func OpenWritable(ctx context.Context) (*Store, error) {
	s, err := Open(ctx)
	if err != nil {
		return nil, cnierr.Wrap(cnierr.NotAvailable, err)
	}
	if err := s.Writable(); err != nil {
		return nil, err
	}
	return s, nil
}

// Writable checks that state can be written (for STATUS). Each call
// writes a file of its own: concurrent STATUS calls sharing one name
// removed each other's.
func (s *Store) Writable() error {
	p := s.Path(fmt.Sprintf(".probe-%d-%d", os.Getpid(), probes.Add(1)))
	// The probe holds data, as a record does: an empty file needs no data
	// block, so it is written even on a full disk, where every ADD fails.
	err := safefile.WriteAtomic(p, make([]byte, safefile.ProbeSize), 0o600)
	if errors.Is(err, unix.ENOSPC) {
		return cnierr.Wrap(cnierr.NotAvailable, fmt.Errorf("state dir %s is full: %w", s.root, err))
	}
	if err != nil {
		return cnierr.Wrap(cnierr.NotAvailable, fmt.Errorf("state dir %s is not writable: %w", s.root, err))
	}
	return os.Remove(p)
}
