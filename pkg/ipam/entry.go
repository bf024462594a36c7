package ipam

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/netdrivers/netdrivers/pkg/netconf"
)

// The store's files, and how they are parsed. Parsing is pure (fuzzed);
// the files are read and written in store_linux.go.
//
//	<dataDir>/<network>/
//	  lock                  flock, as the reference's go-filemutex takes it
//	  <ip>                  "<containerID>\r\n<ifname>" (reference format; old: "<containerID>")
//	  last_reserved_ip.<N>  the last address handed out from range set N
//	  .netdrivers/          ours: the reverse index (the reference's walk reads
//	    state               these files, but their content never matches an entry)
//	    b-00 .. b-ff        records (an attachment's addresses), bucketed by hash
const (
	lockName     = "lock"
	lastIPPrefix = "last_reserved_ip."
	indexDirName = ".netdrivers"
	stateName    = "state"

	// maxEntrySize bounds an address file: a container ID and an ifname.
	maxEntrySize = 1024
	// maxIndexSize bounds a bucket of the index or the state file.
	maxIndexSize = 4 << 20

	recordMagic = "# netdrivers host-local reverse index v1"
	stateMagic  = "# netdrivers host-local index state v1"
)

// owner is who an address file names.
type owner struct {
	ID     string
	IfName string // "" for the old one-line format
}

func (o owner) String() string {
	if o.IfName == "" {
		return fmt.Sprintf("container %q", o.ID)
	}
	return fmt.Sprintf("container %q ifname %q", o.ID, o.IfName)
}

// content is what the reference writes into an address file.
func (o owner) content() []byte {
	return []byte(strings.TrimSpace(o.ID) + "\r\n" + o.IfName)
}

// hash names the attachment's record: 16 hex digits of sha256(id, ifname).
func (o owner) hash() string {
	return netconf.ShortHash(o.ID, o.IfName)
}

// matches reports whether an address file's owner belongs to o, with the
// reference's fallback for the old format (container ID only).
func (o owner) matches(f owner) bool {
	return f.ID == o.ID && (f.IfName == o.IfName || f.IfName == "")
}

var errGarbage = errors.New("not an address entry")

// parseEntry reads an address file's content the way the reference
// compares it (surrounding whitespace trimmed). Empty, oversized or
// control-character content is garbage: the address stays taken (its name
// exists) but belongs to nobody we can name.
func parseEntry(data []byte) (owner, error) {
	if len(data) > maxEntrySize {
		return owner{}, fmt.Errorf("%w: %d bytes", errGarbage, len(data))
	}
	s := strings.TrimSpace(string(data))
	id, ifname, _ := strings.Cut(s, "\r\n")
	if id == "" || strings.TrimSpace(id) != id || hasControl(id) || hasControl(ifname) {
		return owner{}, fmt.Errorf("%w: %q", errGarbage, clip(data))
	}
	return owner{ID: id, IfName: ifname}, nil
}

func hasControl(s string) bool {
	for _, c := range s {
		if c < ' ' || c == 0x7f {
			return true
		}
	}
	return false
}

// parseIPName accepts a directory entry name that is an address in the
// canonical form the reference writes (net.IP.String).
func parseIPName(name string) (netip.Addr, bool) {
	ip, err := netip.ParseAddr(name)
	if err != nil || ip.Zone() != "" || ip.Is4In6() || ip.String() != name {
		return netip.Addr{}, false
	}
	return ip, true
}

// record is one attachment's reverse-index entry: the addresses it holds,
// each with the boot ID it was handed out in ("" if unknown: made by the
// reference binary, or found by a rebuild).
type record struct {
	Owner owner
	IPs   []recordIP
}

type recordIP struct {
	IP   netip.Addr
	Boot string
}

// The index is 256 bucket files, .netdrivers/b-00 to b-ff: an owner's
// record lives in the bucket named by the first two hex digits of its
// hash. A lookup reads one small file; an update rewrites it in place
// (no file is created or renamed in the steady state, which on ext4 costs
// more than everything else a call does).
const (
	bucketPrefix = "b-"
	bucketAlign  = 512 // buckets are padded with newlines to a multiple of this
	stateSize    = 256 // the state file is padded to exactly this
)

func bucketOf(o owner) string { return bucketPrefix + o.hash()[:2] }

func isBucketName(name string) bool {
	if len(name) != len(bucketPrefix)+2 || !strings.HasPrefix(name, bucketPrefix) {
		return false
	}
	_, err := hex.DecodeString(name[len(bucketPrefix):])
	return err == nil && strings.ToLower(name) == name
}

// encodeBucket renders records, sorted by owner. The content starts with
// '#' and holds no '\r', so the reference's walk, which compares trimmed
// content with "<id>\r\n<ifname>" or "<id>", never takes it for an entry.
func encodeBucket(recs []*record) []byte {
	recs = slices.Clone(recs)
	slices.SortFunc(recs, func(a, b *record) int {
		return strings.Compare(a.Owner.ID+"\x00"+a.Owner.IfName, b.Owner.ID+"\x00"+b.Owner.IfName)
	})
	var b bytes.Buffer
	b.WriteString(recordMagic + "\n")
	for _, r := range recs {
		if len(r.IPs) == 0 {
			continue
		}
		fmt.Fprintf(&b, "owner %s %s\n", quote(r.Owner.ID), quote(r.Owner.IfName))
		for _, ip := range r.IPs {
			fmt.Fprintf(&b, "ip %s %s\n", ip.IP, orDefault(ip.Boot, "-"))
		}
	}
	if pad := (bucketAlign - b.Len()%bucketAlign) % bucketAlign; pad > 0 {
		b.Write(bytes.Repeat([]byte{'\n'}, pad))
	}
	return b.Bytes()
}

// parseBucket reads a bucket: owner lines, each followed by its ip lines.
func parseBucket(data []byte) ([]*record, error) {
	lines, err := indexLines(data, recordMagic)
	if err != nil {
		return nil, err
	}
	var out []*record
	for _, f := range lines {
		switch {
		case len(f) == 3 && f[0] == "owner":
			id, err1 := strconv.Unquote(f[1])
			ifname, err2 := strconv.Unquote(f[2])
			if err1 != nil || err2 != nil || id == "" {
				return nil, fmt.Errorf("index: bad owner line %q", strings.Join(f, " "))
			}
			out = append(out, &record{Owner: owner{ID: id, IfName: ifname}})
		case len(f) == 3 && f[0] == "ip" && len(out) > 0:
			ip, ok := parseIPName(f[1])
			if !ok || !validBoot(f[2]) {
				return nil, fmt.Errorf("index: bad ip line %q", strings.Join(f, " "))
			}
			boot := f[2]
			if boot == "-" {
				boot = ""
			}
			r := out[len(out)-1]
			r.IPs = append(r.IPs, recordIP{IP: ip, Boot: boot})
		default:
			return nil, fmt.Errorf("index: unexpected line %q", strings.Join(f, " "))
		}
	}
	return out, nil
}

// quote is a Go string literal with spaces escaped too, so that a record
// line splits on spaces; it never contains '\r'.
func quote(s string) string {
	return strings.ReplaceAll(strconv.QuoteToASCII(s), " ", `\x20`)
}

// indexState is what the last writer of the index saw: the boot it ran
// in and the network directory's identity after its own last change.
type indexState struct {
	Boot string
	Dir  dirStamp
}

// dirStamp identifies the directory's content: any entry created, removed
// or renamed by anyone changes its mtime (see commit in index_linux.go).
type dirStamp struct {
	Dev, Ino, Size uint64
	Sec, Nsec      int64
}

func (s *indexState) encode() []byte {
	d := s.Dir
	return padState(fmt.Appendf(nil, "%s\nboot %s\ndir %d %d %d %d %d\n", stateMagic, orDefault(s.Boot, "-"), d.Dev, d.Ino, d.Size, d.Sec, d.Nsec))
}

// dirtyState marks the index as being changed: whoever finds it (after a
// crash) rebuilds.
var dirtyState = padState([]byte(stateMagic + "\ndirty\n"))

// padState pads with newlines to stateSize, so the state is always
// rewritten in place over the same bytes.
func padState(b []byte) []byte {
	if len(b) < stateSize {
		b = append(b, bytes.Repeat([]byte{'\n'}, stateSize-len(b))...)
	}
	return b
}

func parseState(data []byte) (*indexState, error) {
	lines, err := indexLines(data, stateMagic)
	if err != nil {
		return nil, err
	}
	if len(lines) != 2 || len(lines[0]) != 2 || lines[0][0] != "boot" || !validBoot(lines[0][1]) ||
		len(lines[1]) != 6 || lines[1][0] != "dir" {
		return nil, errors.New("state: malformed")
	}
	s := &indexState{Boot: lines[0][1]}
	if s.Boot == "-" {
		s.Boot = ""
	}
	var nums [5]uint64
	for i := range nums {
		n, err := strconv.ParseUint(lines[1][i+1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("state: %w", err)
		}
		nums[i] = n
	}
	if nums[3] > 1<<62 || nums[4] >= 1e9 {
		return nil, errors.New("state: time out of range")
	}
	s.Dir = dirStamp{Dev: nums[0], Ino: nums[1], Size: nums[2], Sec: int64(nums[3]), Nsec: int64(nums[4])}
	return s, nil
}

// indexLines checks the magic first line and splits the rest into fields.
func indexLines(data []byte, magic string) ([][]string, error) {
	if len(data) > maxIndexSize {
		return nil, fmt.Errorf("index file of %d bytes, more than %d", len(data), maxIndexSize)
	}
	text := string(data)
	first, rest, ok := strings.Cut(text, "\n")
	if !ok || first != magic || !strings.HasSuffix(text, "\n") {
		return nil, errors.New("not an index file of this version")
	}
	var out [][]string
	for _, line := range strings.Split(strings.TrimSuffix(rest, "\n"), "\n") {
		if line == "" {
			continue
		}
		out = append(out, strings.Split(line, " "))
	}
	return out, nil
}

// validBoot accepts a boot ID as the kernel prints it, or "-" for none.
func validBoot(s string) bool {
	if s == "-" {
		return true
	}
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c == '-') {
			return false
		}
	}
	return true
}
