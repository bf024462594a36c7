package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// nsPrefix starts the name of every namespace and work directory the
// benchmark makes, followed by its PID, so that a later run can remove
// what a killed one left behind.
const nsPrefix = "ndbench-"

// registry tracks every namespace and directory of this run, so that
// each exit path (error, panic, SIGINT, SIGTERM) removes all of them.
type registry struct {
	mu   sync.Mutex
	seq  int
	nss  map[*nettest.NS]bool
	dirs map[string]bool
}

func newRegistry() *registry {
	return &registry{nss: map[*nettest.NS]bool{}, dirs: map[string]bool{}}
}

// newNS creates a fresh namespace with lo up, pinned in /run/netns.
func (r *registry) newNS() (*nettest.NS, error) {
	r.mu.Lock()
	r.seq++
	name := fmt.Sprintf("%s%d-%d", nsPrefix, os.Getpid(), r.seq)
	r.mu.Unlock()
	n, err := nettest.CreateNS(name)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.nss[n] = true
	r.mu.Unlock()
	return n, nil
}

// newNSes creates count namespaces.
func (r *registry) newNSes(count int) ([]*nettest.NS, error) {
	out := make([]*nettest.NS, 0, count)
	for range count {
		n, err := r.newNS()
		if err != nil {
			return out, err
		}
		out = append(out, n)
	}
	return out, nil
}

// removeNS unpins a namespace; the kernel destroys it (and the links in
// it) once nothing holds it.
func (r *registry) removeNS(nss ...*nettest.NS) error {
	var errs []error
	for _, n := range nss {
		if n == nil {
			continue
		}
		errs = append(errs, n.Remove())
		r.mu.Lock()
		delete(r.nss, n)
		r.mu.Unlock()
	}
	return errors.Join(errs...)
}

// workBase is where work directories (the plugins' state and address
// stores, ours and the reference's alike) go: a tmpfs when the machine has
// one at /dev/shm, as /run (our state) is on every systemd node; this VM's
// /tmp and /run are on its disk, where each store write costs ~0.3 ms.
// $NDBENCH_WORKDIR overrides it.
func workBase() string {
	if d := os.Getenv("NDBENCH_WORKDIR"); d != "" {
		return d
	}
	var st unix.Statfs_t
	if unix.Statfs("/dev/shm", &st) == nil && st.Type == unix.TMPFS_MAGIC && unix.Access("/dev/shm", unix.W_OK) == nil {
		return "/dev/shm"
	}
	return os.TempDir()
}

// tempDir makes a work directory removed with the run.
func (r *registry) tempDir(what string) (string, error) {
	d, err := os.MkdirTemp(workBase(), fmt.Sprintf("%s%d-%s-", nsPrefix, os.Getpid(), what))
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	r.dirs[d] = true
	r.mu.Unlock()
	return d, nil
}

func (r *registry) removeDir(d string) error {
	r.mu.Lock()
	delete(r.dirs, d)
	r.mu.Unlock()
	return os.RemoveAll(d)
}

// cleanup removes everything still registered.
func (r *registry) cleanup() error {
	r.mu.Lock()
	nss := make([]*nettest.NS, 0, len(r.nss))
	for n := range r.nss {
		nss = append(nss, n)
	}
	dirs := make([]string, 0, len(r.dirs))
	for d := range r.dirs {
		dirs = append(dirs, d)
	}
	r.mu.Unlock()
	errs := []error{r.removeNS(nss...)}
	for _, d := range dirs {
		errs = append(errs, r.removeDir(d))
	}
	return errors.Join(errs...)
}

// sweepStale removes namespaces and work directories left by benchmark
// runs whose process is gone (killed with SIGKILL, say).
func sweepStale() (int, error) {
	var errs []error
	removed := 0
	for _, dir := range []string{nettest.NSDir, os.TempDir(), workBase()} {
		entries, err := os.ReadDir(dir)
		if err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
		for _, e := range entries {
			pid, ok := stalePID(e.Name())
			if !ok {
				continue
			}
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
				continue // a benchmark that is still running
			}
			if dir == nettest.NSDir {
				errs = append(errs, (&nettest.NS{Name: e.Name()}).Remove())
			} else {
				errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
			}
			removed++
		}
	}
	return removed, errors.Join(errs...)
}

func stalePID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, nsPrefix)
	if !ok {
		return 0, false
	}
	p, _, _ := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(p)
	return pid, err == nil && pid != os.Getpid()
}

// hostEnv is one scenario's node: a throwaway "host" namespace whose
// uplink (a veth, its peer in an "outside" namespace that holds the
// gateway) carries the default route and serves as the macvlan parent.
type hostEnv struct {
	reg           *registry
	host, outside *nettest.NS
	conts         []*nettest.NS // container namespaces, removed first
	work          string
}

// containers adds count fresh container namespaces.
func (e *hostEnv) containers(count int) ([]*nettest.NS, error) {
	nss, err := e.reg.newNSes(count)
	e.conts = append(e.conts, nss...)
	return nss, err
}

// Uplink addresses come from TEST-NET-2; containers use 10.99.0.0/21.
const (
	uplink     = "up0"
	uplinkAddr = "198.51.100.2/24"
	uplinkGW   = "198.51.100.1"
	outsideIP  = "198.51.100.1/24"
)

func newHostEnv(reg *registry, name string) (_ *hostEnv, err error) {
	e := &hostEnv{reg: reg}
	defer func() {
		if err != nil {
			err = errors.Join(err, e.close())
		}
	}()
	if e.work, err = reg.tempDir(strings.NewReplacer("/", "-", "+", "-").Replace(name)); err != nil {
		return nil, err
	}
	if e.host, err = reg.newNS(); err != nil {
		return nil, err
	}
	if e.outside, err = reg.newNS(); err != nil {
		return nil, err
	}
	if err := addUplink(e.host, e.outside); err != nil {
		return nil, err
	}
	return e, nil
}

// addUplink links host and outside with a veth named up0 on both ends and
// gives host a default route through outside.
// Equivalent to: ip link add up0 type veth peer up0 netns OUTSIDE; ip addr add ...; ip route add default via 198.51.100.1
func addUplink(host, outside *nettest.NS) error {
	hnl, err := host.Handle().Netlink()
	if err != nil {
		return err
	}
	onl, err := outside.Handle().Netlink()
	if err != nil {
		return err
	}
	la := netlink.NewLinkAttrs()
	la.Name = uplink
	v := &netlink.Veth{LinkAttrs: la, PeerName: uplink, PeerNamespace: netlink.NsFd(outside.Handle().Fd())}
	if err := hnl.LinkAdd(v); err != nil {
		return fmt.Errorf("add uplink veth: %w", err)
	}
	if err := upWithAddr(hnl, uplinkAddr); err != nil {
		return err
	}
	if err := upWithAddr(onl, outsideIP); err != nil {
		return err
	}
	route := &netlink.Route{Gw: net.ParseIP(uplinkGW)}
	if err := hnl.RouteAdd(route); err != nil {
		return fmt.Errorf("add default route: %w", err)
	}
	return nil
}

// upWithAddr gives the uplink an address (no DAD) and sets it up.
func upWithAddr(nl netlinksafe.Handle, cidr string) error {
	l, err := nl.LinkByName(uplink)
	if err != nil {
		return fmt.Errorf("find uplink: %w", err)
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return err
	}
	a.Flags = unix.IFA_F_NODAD
	if err := nl.AddrAdd(l, a); err != nil {
		return fmt.Errorf("add %s to uplink: %w", cidr, err)
	}
	if err := nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("set uplink up: %w", err)
	}
	return nil
}

// close removes the scenario's namespaces and work directory. Container
// namespaces go first; the host's veth peers vanish with them, which is
// awaited so that the kernel's teardown work does not run into the next
// scenario's timings.
func (e *hostEnv) close() error {
	if e == nil {
		return nil
	}
	errs := []error{e.reg.removeNS(e.conts...)}
	e.conts = nil
	if e.host != nil {
		errs = append(errs, waitVethsGone(e.host, 2*time.Minute))
	}
	errs = append(errs, e.reg.removeNS(e.host, e.outside))
	if e.work != "" {
		errs = append(errs, e.reg.removeDir(e.work))
	}
	return errors.Join(errs...)
}

// waitVethsGone polls host until no veth but the uplink remains.
func waitVethsGone(host *nettest.NS, timeout time.Duration) error {
	nl, err := host.Handle().Netlink()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		links, err := nl.LinkList()
		if err != nil {
			return err
		}
		left := 0
		for _, l := range links {
			if l.Type() == "veth" && l.Attrs().Name != uplink {
				left++
			}
		}
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d veths still in the host namespace after %v", left, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
