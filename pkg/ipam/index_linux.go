package ipam

import (
	"bytes"
	"errors"
	"fmt"
	"log"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"
)

// The reverse index maps an attachment to its addresses (records in 256
// bucket files under <network>/.netdrivers/), so that DEL, CHECK and
// Addresses read one small file and the entries it names instead of
// walking every address file.
//
// Fast: a call stats the network directory once and compares it with the
// stamp the last writer recorded in the state file; when they agree the
// index is complete and trusted. Updates rewrite one bucket in place.
//
// Correct beside the reference binary: it does not know the index, but
// every change it makes (creating or removing an address file) changes
// the directory's mtime. The kernel stamps "now", and after each of our
// own changes commit sets the mtime one nanosecond back, to a value no
// later change can produce, even within the same clock tick. So any
// foreign change, however soon after ours, makes the stamps differ and
// the next call rebuilds the index with one walk.
//
// Correct across our own crashes: a call changes the directory before the
// index (or else marks the state dirty first), and only its last step,
// once everything is done, records the stamp again. Stale records are harmless besides: every
// address a record names is checked against its file before it is
// reported or removed.

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
		s.trusted = true
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
	ifd, err := s.indexFD(false)
	if err != nil || ifd < 0 {
		return nil
	}
	data, err := readAt(ifd, stateName, maxIndexSize)
	if err != nil {
		return nil
	}
	st, err := parseState(data)
	if err != nil {
		return nil
	}
	return st
}

// changedDir notes that this call changed the network directory (created
// or removed an entry): from then on the stamp differs from the recorded
// one until commit, so the index is untrusted by anyone who finds it.
func (s *store) changedDir() {
	s.changed, s.dirChanged = true, true
}

// willWriteIndex is called before an index file is written. If the
// directory has not changed yet in this call, the stamp would still match
// a half-written index after a crash: the state is marked dirty first.
// (DEL and ADD change the directory before the index, so in the steady
// state this costs nothing.)
func (s *store) willWriteIndex() {
	s.changed = true
	if !s.trusted || s.dirChanged || s.markedDirty {
		return
	}
	s.markedDirty = true
	ifd, err := s.indexFD(true)
	if err == nil {
		err = writeInPlace(ifd, stateName, dirtyState)
	}
	if err != nil {
		s.indexErr = errors.Join(s.indexErr, fmt.Errorf("mark index dirty: %w", err))
	}
}

// commit records the directory's stamp after this call's changes, so the
// next call can trust the index. It first moves the mtime one nanosecond
// back (see above). If anything failed, the state is removed instead and
// the next call rebuilds.
func (s *store) commit() {
	ifd, err := s.indexFD(true)
	if err == nil {
		err = s.indexErr
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
		err = writeInPlace(ifd, stateName, state.encode())
	}
	if err != nil {
		if ifd >= 0 {
			unix.Unlinkat(ifd, stateName, 0)
		}
		log.Printf("ipam: %s: index not recorded, the next call rebuilds it: %v", s.dir, err)
	}
}

// indexFD opens .netdrivers once per call (creating it if asked). A
// symlink or a file in its place is removed, never followed. -1 without
// error: there is no index directory.
func (s *store) indexFD(create bool) (int, error) {
	if s.ifd >= 0 {
		return s.ifd, nil
	}
	fd, err := unix.Openat(s.fd, indexDirName, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == nil {
		s.ifd = fd
		return fd, nil
	}
	if !create {
		return -1, nil
	}
	if !errors.Is(err, unix.ENOENT) { // ELOOP, ENOTDIR: not ours to follow
		if err := unix.Unlinkat(s.fd, indexDirName, 0); err != nil {
			return -1, storeErr("remove %s/%s (not a directory): %w", s.dir, indexDirName, err)
		}
	}
	if err := unix.Mkdirat(s.fd, indexDirName, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, storeErr("create %s/%s: %w", s.dir, indexDirName, err)
	}
	fd, err = unix.Openat(s.fd, indexDirName, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, storeErr("open %s/%s: %w", s.dir, indexDirName, err)
	}
	s.ifd = fd
	return fd, nil
}

// bucket returns the records of a bucket file, read once per call. A
// missing or unreadable bucket is empty (an unreadable one is rewritten by
// the next rebuild, which the stamp protocol guarantees before it matters).
func (s *store) bucket(name string) []*record {
	if recs, ok := s.buckets[name]; ok {
		return recs
	}
	var recs []*record
	if ifd, err := s.indexFD(false); err == nil && ifd >= 0 {
		if data, err := readAt(ifd, name, maxIndexSize); err == nil {
			recs, _ = parseBucket(data)
		}
	}
	if s.buckets == nil {
		s.buckets = map[string][]*record{}
	}
	s.buckets[name] = recs
	return recs
}

// readRecord returns o's record, or an empty one.
func (s *store) readRecord(o owner) *record {
	for _, r := range s.bucket(bucketOf(o)) {
		if r.Owner == o {
			return &record{Owner: o, IPs: slices.Clone(r.IPs)}
		}
	}
	return &record{Owner: o}
}

// writeRecord stores r in its bucket (removing it when it holds nothing).
// A failure leaves the index untrusted for the next call, never this
// call's result wrong.
func (s *store) writeRecord(r *record) {
	name := bucketOf(r.Owner)
	var recs []*record
	for _, x := range s.bucket(name) {
		if x.Owner != r.Owner {
			recs = append(recs, x)
		}
	}
	if len(r.IPs) > 0 {
		recs = append(recs, &record{Owner: r.Owner, IPs: slices.Clone(r.IPs)})
	}
	s.writeBucket(name, recs)
}

func (s *store) writeBucket(name string, recs []*record) {
	s.willWriteIndex()
	if s.buckets == nil {
		s.buckets = map[string][]*record{}
	}
	s.buckets[name] = recs
	ifd, err := s.indexFD(true)
	if err == nil {
		err = writeInPlace(ifd, name, encodeBucket(recs))
	}
	if err != nil {
		s.indexErr = errors.Join(s.indexErr, fmt.Errorf("write index %s: %w", name, err))
	}
}

// readIndex reads every bucket (a rebuild's view of the old index) and
// removes whatever else is in the index directory: temporaries of a
// crash, files of older layouts, garbage.
func (s *store) readIndex() map[string][]*record {
	out := map[string][]*record{}
	ifd, err := s.indexFD(false)
	if err != nil || ifd < 0 {
		return out
	}
	names, err := readDirNames(ifd)
	if err != nil {
		return out
	}
	for _, name := range names {
		switch {
		case name == stateName:
		case isBucketName(name):
			out[name] = s.bucket(name)
		default:
			unix.Unlinkat(ifd, name, 0)
		}
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
	old := s.readIndex()
	var errs []error
	var kept []entry
	var cut *reclaimCut
	for _, name := range names {
		ip, ok := parseIPName(name)
		if !ok {
			continue // lock, last_reserved_ip.N, the index, anything else
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
	s.changed = true // commit records the stamp the rebuilt index matches
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

func bootOf(old map[string][]*record, e entry) string {
	if e.Err != nil {
		return ""
	}
	for _, r := range old[bucketOf(e.Owner)] {
		if r.Owner != e.Owner {
			continue
		}
		for _, rip := range r.IPs {
			if rip.IP == e.IP {
				return rip.Boot
			}
		}
	}
	return ""
}

// writeIndex rewrites the buckets to match the entries, touching only
// those whose content changes.
func (s *store) writeIndex(entries []entry, old map[string][]*record) {
	byOwner := map[owner]*record{}
	buckets := map[string][]*record{}
	for name := range old {
		buckets[name] = nil
	}
	for _, e := range entries {
		if e.Err != nil {
			continue
		}
		r := byOwner[e.Owner]
		if r == nil {
			r = &record{Owner: e.Owner}
			byOwner[e.Owner] = r
			buckets[bucketOf(e.Owner)] = append(buckets[bucketOf(e.Owner)], r)
		}
		r.IPs = append(r.IPs, recordIP{IP: e.IP, Boot: e.Boot})
	}
	for name, recs := range buckets {
		for _, r := range recs {
			slices.SortFunc(r.IPs, func(a, b recordIP) int { return a.IP.Compare(b.IP) })
		}
		if o, ok := old[name]; ok && bytes.Equal(encodeBucket(o), encodeBucket(recs)) {
			continue
		}
		s.writeBucket(name, recs)
	}
}
