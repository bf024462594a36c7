package dnat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/reexec"
)

// udpFlush lists, by family, the published UDP host ports whose conntrack
// entries an Add or Del flushes.
type udpFlush struct{ v4, v6 []uint16 }

func (f *udpFlush) add(v4 bool, port uint16) {
	list := &f.v6
	if v4 {
		list = &f.v4
	}
	for _, p := range *list {
		if p == port {
			return
		}
	}
	*list = append(*list, port)
}

func (f *udpFlush) merge(o udpFlush) {
	for _, p := range o.v4 {
		f.add(true, p)
	}
	for _, p := range o.v6 {
		f.add(false, p)
	}
}

// flushUDP deletes, in the host namespace, the UDP conntrack entries of
// the published host ports, so that datagrams stop following entries made
// before the mapping changed (plugins#123). Deleting by port means a dump:
// the kernel walks its whole conntrack hash (262,144 buckets on a 24 GiB
// machine, ~6 ms) however few entries the namespace holds. So in a plugin
// the namespace's detached flusher (flusher_linux.go) does it after the
// plugin answered, for all the calls of a flushBatch at once (the entries
// go up to a few hundred milliseconds later; the runtime does not wait),
// and it dumps only the families with UDP ports, and not at all when the
// namespace has no entries. after delays the flush.
// Equivalent to: conntrack -D -p udp --orig-port-dst PORT (-f ipv4, -f ipv6)
func flushUDP(host *netns.Handle, f udpFlush, after time.Duration) error {
	if len(f.v4)+len(f.v6) == 0 {
		return nil
	}
	if detachedFlush(host) {
		if requestFlush(f, after) == nil {
			return nil
		}
		if err := reexec.Start(flushHelper, flushEnv+"="+f.encode(after)); err == nil {
			return nil
		}
	}
	time.Sleep(after)
	return flushNow(host, f)
}

// detachedFlush reports whether flushUDP in host leaves the flush to a
// process of its own (the namespace's flusher), after the plugin answered.
func detachedFlush(host *netns.Handle) bool { return host.IsSelf() && reexec.Enabled() }

const (
	flushHelper = "flush-udp"
	flushEnv    = "NETDRIVERS_FLUSH_UDP"
)

func init() { reexec.Register(flushHelper, flushFromEnv) }

// flushFromEnv is the detached copy's work: NETDRIVERS_FLUSH_UDP holds
// "after;v4 ports;v6 ports", ports comma-separated. The copy becomes the
// namespace's flusher or, when another one took the address first, hands
// its ports to that one (or, failing that, flushes them itself).
func flushFromEnv() int {
	f, after, err := decodeFlush(os.Getenv(flushEnv))
	if err != nil {
		return 2
	}
	host, err := netns.Self()
	if err != nil {
		return 1
	}
	defer host.Close()
	walk := func(f udpFlush) error { return flushNow(host, f) }
	if ln, err := listenFlusher(); err == nil {
		s := newFlushServer(walk, flushBatch, flusherIdle)
		s.add(f, after)
		s.serve(ln)
		return 0
	}
	if requestFlush(f, after) == nil {
		return 0
	}
	time.Sleep(after)
	if walk(f) != nil {
		return 1
	}
	return 0
}

func (f udpFlush) encode(after time.Duration) string {
	join := func(ps []uint16) string {
		var b []string
		for _, p := range ps {
			b = append(b, strconv.Itoa(int(p)))
		}
		return strings.Join(b, ",")
	}
	return after.String() + ";" + join(f.v4) + ";" + join(f.v6)
}

func decodeFlush(s string) (udpFlush, time.Duration, error) {
	var f udpFlush
	parts := strings.Split(s, ";")
	if len(parts) != 3 {
		return f, 0, fmt.Errorf("flush spec %q", s)
	}
	after, err := time.ParseDuration(parts[0])
	if err != nil {
		return f, 0, err
	}
	for i, list := range parts[1:] {
		for _, p := range strings.Split(list, ",") {
			if p == "" {
				continue
			}
			n, err := strconv.ParseUint(p, 10, 16)
			if err != nil {
				return f, 0, err
			}
			f.add(i == 0, uint16(n))
		}
	}
	return f, after, nil
}

// flushNow is the flush itself, in host.
func flushNow(host *netns.Handle, f udpFlush) error {
	var count uint32
	err := host.Do(func() (err error) { count, err = conntrackCount(); return err })
	if err == nil && count == 0 {
		return nil
	}
	var h netlinksafe.Handle
	if host.IsSelf() {
		h, err = netlinksafe.NewHandle(unix.NETLINK_NETFILTER)
	} else {
		h, err = netlinksafe.NewHandleAt(vnetns.NsHandle(host.Fd()), unix.NETLINK_NETFILTER)
	}
	if err != nil {
		return fmt.Errorf("open conntrack socket: %w", err)
	}
	defer h.Close()
	var errs []error
	for _, fp := range []struct {
		fam   netlink.InetFamily
		ports []uint16
	}{{unix.AF_INET, f.v4}, {unix.AF_INET6, f.v6}} {
		if len(fp.ports) == 0 {
			continue
		}
		filters := make([]netlink.CustomConntrackFilter, 0, len(fp.ports))
		for _, p := range fp.ports {
			cf := &netlink.ConntrackFilter{}
			if err := cf.AddProtocol(unix.IPPROTO_UDP); err != nil {
				return err
			}
			if err := cf.AddPort(netlink.ConntrackOrigDstPort, p); err != nil {
				return err
			}
			filters = append(filters, cf)
		}
		if _, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, fp.fam, filters...); err != nil {
			errs = append(errs, fmt.Errorf("flush udp conntrack entries of ports %v: %w", fp.ports, err))
		}
	}
	return errors.Join(errs...)
}

// ctnetlink's "get statistics" request and its entry count attribute
// (linux/netfilter/nfnetlink_conntrack.h).
const (
	ipctnlMsgCtGetStats   = 5
	ctaStatsGlobalEntries = 1
)

// conntrackCount is the number of conntrack entries of the calling
// thread's namespace: one request, no dump. (The kernel flags its single
// answer NLM_F_MULTI without a NLMSG_DONE after it, which netlink
// libraries wait for: hence a plain socket.)
// Equivalent to: conntrack -C
func conntrackCount() (uint32, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return 0, fmt.Errorf("conntrack statistics: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 1}); err != nil {
		return 0, err
	}
	req := nl.NewNetlinkRequest(unix.NFNL_SUBSYS_CTNETLINK<<8|ipctnlMsgCtGetStats, 0)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: unix.AF_UNSPEC, Version: unix.NFNETLINK_V0})
	if err := unix.Sendto(fd, req.Serialize(), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("conntrack statistics: %w", err)
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return 0, fmt.Errorf("conntrack statistics: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return 0, err
	}
	for _, m := range msgs {
		if m.Header.Type == unix.NLMSG_ERROR || len(m.Data) < nl.SizeofNfgenmsg {
			return 0, errors.New("conntrack statistics: refused")
		}
		attrs, err := nl.ParseRouteAttr(m.Data[nl.SizeofNfgenmsg:])
		if err != nil {
			return 0, err
		}
		for _, a := range attrs {
			if a.Attr.Type&^unix.NLA_F_NESTED == ctaStatsGlobalEntries && len(a.Value) >= 4 {
				return binary.BigEndian.Uint32(a.Value), nil
			}
		}
	}
	return 0, errors.New("conntrack statistics: no entry count")
}
