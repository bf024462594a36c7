package hostport

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/netns"
)

// errNoProbe means the protocol cannot be probed here (no SCTP, no IPv6):
// then nothing can be bound there either.
var errNoProbe = errors.New("protocol not available")

// Probe reports ErrPortInUse, naming the process when it can be found, if
// a socket of the calling thread's network namespace (the node's, for a
// plugin) holds p's port: it tries to bind that port, the O(1) test the
// kernel itself applies. TCP binds with SO_REUSEADDR, so only a listener
// or a socket bound without it conflicts, never TIME_WAIT leftovers;
// IP_FREEBIND lets a host IP that is not (yet) local be probed.
func Probe(p netconf.Port) error {
	var err error
	switch {
	case !p.HostIP.IsValid():
		// Every address of both families: a dual-stack [::] bind conflicts
		// with any IPv4 or IPv6 socket on the port.
		err = bindTest(p.Protocol, netip.IPv6Unspecified(), p.HostPort, false)
		if errors.Is(err, errNoProbe) {
			err = bindTest(p.Protocol, netip.IPv4Unspecified(), p.HostPort, false)
		}
	default:
		err = bindTest(p.Protocol, p.HostIP, p.HostPort, true)
	}
	switch {
	case err == nil, errors.Is(err, errNoProbe):
		return nil
	case errors.Is(err, unix.EADDRINUSE):
		return fmt.Errorf("%w: %s port %d%s is in use by %s on the host",
			ErrPortInUse, p.Protocol, p.HostPort, onIP(p), Owner(p.Protocol, p.HostPort))
	}
	return cnierr.Wrap(cnierr.IOFailure, fmt.Errorf("probe %s: %w", p, err))
}

func bindTest(proto string, ip netip.Addr, port uint16, v6only bool) error {
	typ, ipproto := unix.SOCK_STREAM, 0
	switch proto {
	case "udp":
		typ = unix.SOCK_DGRAM
	case "sctp":
		// socket() would load the sctp module; without it nothing listens.
		if _, err := os.Stat("/proc/thread-self/net/sctp"); err != nil {
			return errNoProbe
		}
		ipproto = unix.IPPROTO_SCTP
	}
	family := unix.AF_INET
	if ip.Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, ipproto)
	if err != nil {
		if err == unix.EAFNOSUPPORT || err == unix.EPROTONOSUPPORT || err == unix.ESOCKTNOSUPPORT {
			return errNoProbe
		}
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	if typ == unix.SOCK_STREAM {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return fmt.Errorf("SO_REUSEADDR: %w", err)
		}
	}
	var sa unix.Sockaddr
	if family == unix.AF_INET6 {
		v := 0
		if v6only {
			v = 1
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v); err != nil {
			return fmt.Errorf("IPV6_V6ONLY: %w", err)
		}
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1)
		sa = &unix.SockaddrInet6{Port: int(port), Addr: ip.As16()}
	} else {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_FREEBIND, 1)
		sa = &unix.SockaddrInet4{Port: int(port), Addr: ip.As4()}
	}
	err = unix.Bind(fd, sa)
	if err == unix.EADDRNOTAVAIL && family == unix.AF_INET6 && ip.IsUnspecified() {
		return errNoProbe // IPv6 disabled
	}
	return err
}

// Owner names the process holding a port of the calling thread's network
// namespace ("nginx (pid 812)"), from /proc/thread-self/net/{proto,proto6}
// and /proc/*/fd. It is only called once a conflict is found: the fd walk
// costs O(open files on the host).
func Owner(proto string, port uint16) string {
	inodes := socketInodes(proto, port)
	if len(inodes) == 0 {
		return "a socket (owner not found)"
	}
	if who := findProcess(inodes); who != "" {
		return who
	}
	return "a socket (owning process not visible)"
}

// socketInodes returns the inodes of sockets bound to port, listeners
// first (TCP state 0A).
func socketInodes(proto string, port uint16) []string {
	var listen, other []string
	for _, table := range []string{proto, proto + "6"} {
		f, err := os.Open(filepath.Join("/proc/thread-self/net", table))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 {
				continue
			}
			_, hexPort, ok := strings.Cut(fields[1], ":")
			if n, err := strconv.ParseUint(hexPort, 16, 16); !ok || err != nil || uint16(n) != port {
				continue
			}
			if proto == "tcp" && fields[3] == "0A" {
				listen = append(listen, fields[9])
			} else if fields[9] != "0" {
				other = append(other, fields[9])
			}
		}
		f.Close()
	}
	return append(listen, other...)
}

// findProcess names a process holding the first of inodes that one
// holds. Several can hold a socket: a server's workers, and any child
// between fork and exec, which has every fd of its parent (a plugin's
// test once named such a copy of itself); it names the one whose parent
// does not hold it.
func findProcess(inodes []string) string {
	want := make(map[string]int, len(inodes))
	for i, ino := range inodes {
		want["socket:["+ino+"]"] = i
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return ""
	}
	holders := make([][]int, len(inodes))
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fdDir := filepath.Join("/proc", p.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if rank, ok := want[link]; err == nil && ok && !slices.Contains(holders[rank], pid) {
				holders[rank] = append(holders[rank], pid)
			}
		}
	}
	for _, pids := range holders {
		if len(pids) > 0 {
			pid := eldest(pids)
			return fmt.Sprintf("%s (pid %d)", netns.ProcessName(pid), pid)
		}
	}
	return ""
}

// eldest is the one of pids whose parent is not among them (the lowest
// such pid; pids wrap, so the lowest pid alone proves nothing).
func eldest(pids []int) int {
	best := 0
	for _, p := range pids {
		if !slices.Contains(pids, ppid(p)) && (best == 0 || p < best) {
			best = p
		}
	}
	if best == 0 {
		return slices.Min(pids)
	}
	return best
}

// ppid is pid's parent, from /proc/PID/stat (after the command name,
// which may hold spaces and parentheses); 0 if unknown.
func ppid(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:])) // state, ppid, ...
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}
