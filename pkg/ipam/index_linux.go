package ipam

import (
	"bytes"
	"errors"
	"fmt"
	"log"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/safefile"
)

// The reverse index maps an attachment to its addresses, one small record
// per attachment in <network>/.netdrivers/, so that DEL, CHECK and
// Addresses read one record and the entries it names instead of walking
// every address file.
//
// Fast: a call stats the network directory once and compares it with the
// stamp the last writer recorded (state); when they agree the index is
// complete and trusted.
//
// Correct beside the reference binary: it does not know the index, but
// every change it makes (creating or removing an address file) changes
// the directory's mtime. The kernel stamps "now", and after each of our
// own changes commit sets the mtime one nanosecond back, to a value no
// later change can produce, even within the same clock tick. So any
// foreign change, however soon after ours, makes the stamps differ and
// the next call rebuilds the index with one walk. Stale records are
// harmless besides: every address a record names is checked against its
// file before it is reported or removed.

// sync makes the index trustworthy for this call: one fstat in the steady
// state, a rebuild after a foreign change, a crash, or a new boot (which
// also reclaims entries of earlier boots).
func (s *store) sync() error {
	st, err := s.stamp()
	if err != nil {
		return err
	}
	state := s.readState()
	if state != nil && state.Boot == s.boot && state.Dir == st {
		return nil
	}
	_, err = s.rebuild(rebuildOpts{reclaim: state == nil || state.Boot != s.boot})
	return err
}

func (s *store) stamp() (dirStamp, error) {
	var st unix.Stat_t
	if err := unix.Fstat(s.fd, &st); err != nil {
		return dirStamp{}, storeErr("stat %s: %w", s.dir, err)
	}
	return dirStamp{Dev: st.Dev, Ino: st.Ino, Size: uint64(st.Size), Sec: st.Mtim.Sec, Nsec: st.Mtim.Nsec}, nil
}

func (s *store) readState() *indexState {
	data, err := readAt(s.fd, filepath.Join(indexDirName, stateName), maxIndexSize)
	if err != nil {
		return nil
	}
	st, err := parseState(data)
	if err != nil {
		return nil
	}
	return st
}

// commit records the directory's stamp after this call's changes, so the
// next call can trust the index. It first moves the mtime one nanosecond
// back (see above). If anything fails, the state is removed instead and
// the next call rebuilds.
func (s *store) commit() {
	statePath := filepath.Join(s.dir, indexDirName, stateName)
	err := s.indexErr
	if err == nil {
		err = s.ensureIndexDir()
	}
	var st dirStamp
	if err == nil {
		st, err = s.stamp()
	}
	if err == nil {
		back := unix.NsecToTimespec(unix.TimespecToNsec(unix.Timespec{Sec: st.Sec, Nsec: st.Nsec}) - 1)
		err = unix.UtimesNanoAt(unix.AT_FDCWD, s.dir, []unix.Timespec{{Nsec: unix.UTIME_OMIT}, back}, 0)
	}
	if err == nil {
		st, err = s.stamp()
	}
	if err == nil {
		state := indexState{Boot: s.boot, Dir: st}
		err = safefile.WriteAtomic(statePath, state.encode(), 0o600)
	}
	if err != nil {
		os.Remove(statePath)
		log.Printf("ipam: %s: index not recorded, the next call rebuilds it: %v", s.dir, err)
	}
}

// ensureIndexDir makes .netdrivers a real directory: a symlink or a file
// in its place is removed, never followed.
func (s *store) ensureIndexDir() error {
	var st unix.Stat_t
	err := unix.Fstatat(s.fd, indexDirName, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return nil
	}
	if err == nil {
		if err := unix.Unlinkat(s.fd, indexDirName, 0); err != nil {
			return storeErr("remove %s/%s (not a directory): %w", s.dir, indexDirName, err)
		}
	}
	if err := unix.Mkdirat(s.fd, indexDirName, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return storeErr("create %s/%s: %w", s.dir, indexDirName, err)
	}
	s.changed = true
	return nil
}

// readRecord returns o's record, or an empty one.
func (s *store) readRecord(o owner) *record {
	data, err := readAt(s.fd, filepath.Join(indexDirName, o.hash()), maxIndexSize)
	if err != nil {
		return &record{Owner: o}
	}
	r, err := parseRecord(data)
	if err != nil || r.Owner != o {
		return &record{Owner: o}
	}
	return r
}

// writeRecord stores r, or removes it when it holds nothing. A failure
// leaves the index untrusted for the next call, never this call's result
// wrong.
func (s *store) writeRecord(r *record) {
	s.changed = true
	if err := s.ensureIndexDir(); err != nil {
		s.indexErr = errors.Join(s.indexErr, err)
		return
	}
	p := filepath.Join(s.dir, indexDirName, r.Owner.hash())
	var err error
	if len(r.IPs) == 0 {
		if err = os.Remove(p); errors.Is(err, os.ErrNotExist) {
			err = nil
		}
	} else {
		err = safefile.WriteAtomic(p, r.encode(), 0o600)
	}
	if err != nil {
		s.indexErr = errors.Join(s.indexErr, fmt.Errorf("write index record: %w", err))
	}
}

// readRecords reads every record of the index, keyed by file name.
func (s *store) readRecords() map[string]*record {
	out := map[string]*record{}
	f, err := os.Open(filepath.Join(s.dir, indexDirName))
	if err != nil {
		return out
	}
	names, _ := f.Readdirnames(-1)
	f.Close()
	for _, name := range names {
		if safefile.IsTemp(name) { // a crash's leftover
			unix.Unlinkat(s.fd, filepath.Join(indexDirName, name), 0)
			continue
		}
		if name == stateName {
			continue
		}
		data, err := readAt(s.fd, filepath.Join(indexDirName, name), maxIndexSize)
		if err != nil {
			out[name] = nil
			continue
		}
		r, err := parseRecord(data)
		if err != nil || r.Owner.hash() != name {
			out[name] = nil // garbage: removed by the rebuild
			continue
		}
		out[name] = r
	}
	return out
}

// rebuildOpts says what a rebuild does besides re-indexing.
type rebuildOpts struct {
	reclaim bool               // remove entries of earlier boots
	valid   func(o owner) bool // GC: remove entries of owners not valid
}

// rebuild walks the network directory once, reads every address file,
// optionally removes stale entries, and rewrites the index to match.
// It returns the entries kept.
func (s *store) rebuild(o rebuildOpts) ([]entry, error) {
	names, err := s.names()
	if err != nil {
		return nil, err
	}
	old := s.readRecords()
	var errs []error
	var kept []entry
	var cut *reclaimCut
	for _, name := range names {
		ip, ok := parseIPName(name)
		if !ok {
			if strings.HasPrefix(name, "."+lastIPPrefix) && safefile.IsTemp(name) {
				s.removeName(name) // our crash's leftover
			}
			continue
		}
		e := entry{IP: ip}
		e.Owner, e.Err = s.readEntry(ip)
		if errors.Is(e.Err, errNoEntry) {
			continue // removed meanwhile (cannot happen under the lock)
		}
		e.Boot = bootOf(old, e)
		if o.reclaim && cut == nil {
			cut = newReclaimCut(s.conf)
		}
		drop, why := false, ""
		if o.reclaim {
			drop, why = cut.stale(s, e)
		}
		if !drop && o.valid != nil && e.Err == nil && !o.valid(e.Owner) {
			drop, why = true, "not a valid attachment"
		}
		if drop {
			if err := s.remove(ip); err != nil {
				errs = append(errs, err)
				kept = append(kept, e)
			} else {
				log.Printf("ipam: %s: released %s (%s): %s", s.dir, ip, describe(e), why)
			}
			continue
		}
		if e.Err != nil {
			log.Printf("ipam: %s: %s: %v (left in place: the address stays taken)", s.dir, ip, e.Err)
		}
		kept = append(kept, e)
	}
	s.writeIndex(kept, old)
	return kept, errors.Join(errs...)
}

// entry is one address file as a rebuild found it.
type entry struct {
	IP    netip.Addr
	Owner owner
	Err   error  // unreadable or garbage: nobody can be named
	Boot  string // from the old index, "" if unknown
}

func describe(e entry) string {
	if e.Err != nil {
		return "unreadable entry"
	}
	return e.Owner.String()
}

func bootOf(old map[string]*record, e entry) string {
	if e.Err != nil {
		return ""
	}
	if r := old[e.Owner.hash()]; r != nil && r.Owner == e.Owner {
		for _, rip := range r.IPs {
			if rip.IP == e.IP {
				return rip.Boot
			}
		}
	}
	return ""
}

// writeIndex rewrites the records to match the entries, touching only
// records whose content changes.
func (s *store) writeIndex(entries []entry, old map[string]*record) {
	recs := map[string]*record{}
	for _, e := range entries {
		if e.Err != nil {
			continue
		}
		h := e.Owner.hash()
		if recs[h] == nil {
			recs[h] = &record{Owner: e.Owner}
		}
		recs[h].IPs = append(recs[h].IPs, recordIP{IP: e.IP, Boot: e.Boot})
	}
	for h, r := range recs {
		slices.SortFunc(r.IPs, func(a, b recordIP) int { return a.IP.Compare(b.IP) })
		if o := old[h]; o != nil && bytes.Equal(o.encode(), r.encode()) {
			continue
		}
		s.writeRecord(r)
	}
	for h := range old {
		if recs[h] == nil {
			s.changed = true
			if err := unix.Unlinkat(s.fd, filepath.Join(indexDirName, h), 0); err != nil && !errors.Is(err, unix.ENOENT) {
				s.indexErr = errors.Join(s.indexErr, err)
			}
		}
	}
	s.changed = true
}
