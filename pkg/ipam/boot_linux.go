package ipam

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/safefile"
)

// Reclaiming entries of an earlier boot (plugins#697: a store on disk
// outlives the containers it names).
//
// The rule: at the first call of a boot in a network (the index state
// names another boot, or there is none), an address file is released
//   - if our index records that we handed it out in another boot (exact:
//     the kernel's boot ID, no clocks involved); or
//   - if nothing records its boot (the reference binary, or an unreadable
//     entry made it) and its inode changed last before this boot began,
//     by a margin.
//
// Entries our index records for this boot are never touched, and after the
// first call of a boot no entry is reclaimed at all: everything found later
// was made during this boot.
//
// "Before this boot began" must hold even when the wall clock jumps after
// boot (NTP stepping a wrong RTC, a VM restored from a snapshot: on this
// project's test VM /proc/stat's btime is 2.5 days later than the birth of
// /dev). The bound is therefore the earlier of /proc/stat's btime (correct
// when the clock stepped back) and the birth time of /dev, a devtmpfs the
// kernel mounts at boot and stamps with the clock of that moment (correct
// when it stepped forward), minus a margin for coarse timestamps. The
// inode change time is used, which no one can set back (utimensat, cp -a
// and tar only restore mtime).
const reclaimMargin = time.Minute

type reclaimCut struct {
	before time.Time // zero: unknown, so nothing of unknown origin is reclaimed
}

func newReclaimCut(c *Config) *reclaimCut {
	if c.reclaimBefore != nil {
		return &reclaimCut{before: c.reclaimBefore()}
	}
	bt, err := safefile.BootTime()
	if err != nil {
		return &reclaimCut{}
	}
	var stx unix.Statx_t
	if unix.Statx(unix.AT_FDCWD, "/dev", 0, unix.STATX_BTIME, &stx) == nil && stx.Mask&unix.STATX_BTIME != 0 && stx.Btime.Sec > 0 {
		if dev := time.Unix(stx.Btime.Sec, int64(stx.Btime.Nsec)); dev.Before(bt) {
			bt = dev
		}
	}
	return &reclaimCut{before: bt.Add(-reclaimMargin)}
}

// stale decides whether e is a leftover of an earlier boot, and says why.
func (c *reclaimCut) stale(s *store, e entry) (bool, string) {
	switch {
	case e.Boot == s.boot:
		return false, ""
	case e.Boot != "" && e.Err == nil:
		return true, fmt.Sprintf("handed out in boot %s, not this one", e.Boot)
	case c.before.IsZero():
		return false, ""
	}
	var st unix.Stat_t
	if err := unix.Fstatat(s.fd, e.IP.String(), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return false, ""
	}
	changed := time.Unix(st.Ctim.Sec, st.Ctim.Nsec)
	if changed.Before(c.before) {
		return true, fmt.Sprintf("last changed %s, before this boot began", changed.UTC().Format(time.RFC3339))
	}
	return false, ""
}
