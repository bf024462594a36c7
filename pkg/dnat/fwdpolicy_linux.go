package dnat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Reading the iptables-legacy filter table the way iptables-legacy does,
// with getsockopt on a raw socket, costs one syscall pair instead of an
// exec. Layouts from linux/netfilter_ipv4/ip_tables.h and ip6_tables.h.
const (
	soGetInfo    = 64 // IPT_SO_GET_INFO, IP6T_SO_GET_INFO
	soGetEntries = 65 // IPT_SO_GET_ENTRIES, IP6T_SO_GET_ENTRIES
	getInfoLen   = 84 // struct ipt_getinfo
	underflowFwd = 64 // its underflow[NF_INET_FORWARD]: the policy rule's offset
	infoSize     = 80 // its size: the entries' length
	entriesHead  = 40 // struct ipt_get_entries before entrytable (8-aligned)
	targetLen    = 32 // struct xt_entry_target; a standard target's verdict follows
	nfDrop       = 0  // NF_DROP
)

// legacyFilter reports, in the calling thread's namespace, whether the
// iptables-legacy filter table of a family exists, whether its FORWARD
// policy is DROP and whether it holds the NETDRIVERS-FORWARD chain.
func legacyFilter(v4 bool) (exists, drop, chain bool, err error) {
	targetOff := 140 // ip6t_entry.target_offset
	if v4 {
		targetOff = 88 // ipt_entry.target_offset
	}
	blob, policyAt, exists, err := legacyTable(v4, "filter")
	if !exists || err != nil {
		return exists, false, false, err
	}
	drop, err = standardVerdictIsDrop(blob, policyAt, targetOff)
	return true, drop, legacyHasChain(blob, iptForward), err
}

// legacyHasChain reports whether a table's entries hold a user chain: it
// starts with an ERROR target holding its name.
func legacyHasChain(blob []byte, chain string) bool {
	return bytes.Contains(blob, append([]byte(chain), 0))
}

// legacyTable returns, in the calling thread's namespace, the entries of
// a family's iptables-legacy table and the offset of its FORWARD policy
// rule (filter only). The table is read only when /proc lists it: asking
// for a table creates it.
func legacyTable(v4 bool, table string) (blob []byte, policyAt uint32, exists bool, err error) {
	names, fam, level := "ip6_tables_names", unix.AF_INET6, unix.SOL_IPV6
	if v4 {
		names, fam, level = "ip_tables_names", unix.AF_INET, unix.SOL_IP
	}
	b, err := os.ReadFile("/proc/thread-self/net/" + names)
	if err != nil || !slices.Contains(strings.Fields(string(b)), table) {
		return nil, 0, false, nil // no legacy table: nothing of it can drop or hold ours
	}
	fd, err := unix.Socket(fam, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return nil, 0, true, fmt.Errorf("open raw socket: %w", err)
	}
	defer unix.Close(fd)
	for range 3 { // the table can be replaced between the two calls: EAGAIN
		blob, policyAt, err = legacyEntries(fd, level, table)
		if !errors.Is(err, unix.EAGAIN) {
			return blob, policyAt, true, err
		}
	}
	return nil, 0, true, fmt.Errorf("read iptables-legacy %s table: %w", table, err)
}

// legacyEntries returns a table's entries and the offset of the FORWARD
// policy rule in them.
func legacyEntries(fd, level int, table string) ([]byte, uint32, error) {
	info := make([]byte, getInfoLen)
	copy(info, table)
	if err := getsockopt(fd, level, soGetInfo, info); err != nil {
		return nil, 0, fmt.Errorf("get iptables-legacy %s info: %w", table, err)
	}
	policyAt, size := binary.NativeEndian.Uint32(info[underflowFwd:]), binary.NativeEndian.Uint32(info[infoSize:])
	if size > 64<<20 {
		return nil, 0, fmt.Errorf("iptables-legacy %s table of %d bytes", table, size)
	}
	buf := make([]byte, entriesHead+int(size))
	copy(buf, table)
	binary.NativeEndian.PutUint32(buf[32:], size)
	if err := getsockopt(fd, level, soGetEntries, buf); err != nil {
		return nil, 0, fmt.Errorf("get iptables-legacy %s entries: %w", table, err)
	}
	return buf[entriesHead:], policyAt, nil
}

// standardVerdictIsDrop decodes the standard target of the entry at off.
func standardVerdictIsDrop(blob []byte, off uint32, targetOff int) (bool, error) {
	if int(off)+targetOff+2 > len(blob) {
		return false, fmt.Errorf("iptables-legacy FORWARD policy at %d is outside the table", off)
	}
	t := int(off) + int(binary.NativeEndian.Uint16(blob[int(off)+targetOff:]))
	if t+targetLen+4 > len(blob) {
		return false, fmt.Errorf("iptables-legacy FORWARD policy target at %d is outside the table", t)
	}
	verdict := int32(binary.NativeEndian.Uint32(blob[t+targetLen:]))
	return verdict == -nfDrop-1, nil
}

func getsockopt(fd, level, opt int, buf []byte) error {
	n := uint32(len(buf))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
	if errno != 0 {
		return errno
	}
	return nil
}
