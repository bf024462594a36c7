package netns

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/state"
)

// A re-bind is two mount operations: a process killed between them leaves
// two namespaces stacked at the path (the atomic switch) or none (the
// fallback), which the runtime's container cannot start in. The marker,
// written before the first and removed after the second, lets DEL and GC
// repair that.
type rebindMark struct {
	Path    string `json:"path"`
	Network string `json:"network"`
}

// markPath is flat in the state root: no directory is left behind.
func markPath(key netconf.Key) string { return "rebinding." + key.Hash() + ".json" }

// Repair finishes what a re-bind of key killed half-way left (see
// repairPath), so the path shows exactly one namespace again, and drops
// the marker. Gone is success.
func Repair(s *state.Store, key netconf.Key) error {
	var m rebindMark
	ok, err := s.Get(markPath(key), &m)
	if err != nil {
		return errors.Join(err, s.Del(markPath(key)))
	}
	if !ok {
		return nil
	}
	if err := repairPath(m.Path); err != nil {
		return err
	}
	return s.Del(markPath(key))
}

// RepairGC repairs the half-done re-binds of network's attachments not in
// valid.
func RepairGC(_ context.Context, s *state.Store, network string, valid []netconf.Key) error {
	keep := map[string]bool{}
	for _, k := range valid {
		keep[markPath(k)] = true
	}
	names, err := s.List(".")
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		if keep[n] || !strings.HasPrefix(n, "rebinding.") || !strings.HasSuffix(n, ".json") {
			continue
		}
		var m rebindMark
		if ok, err := s.Get(n, &m); err != nil || !ok || m.Network != network {
			continue // another network's, or unreadable: not this GC's to judge
		}
		errs = append(errs, repairPath(m.Path), s.Del(n))
	}
	return errors.Join(errs...)
}

// repairPath finishes or undoes a switch a kill cut in half. Two mounts
// stacked at p (the atomic switch stopped after mounting the target
// beneath): the pinned one on top goes, as the switch would have done. A
// plain file (the fallback switch stopped after its unmount): a fresh
// namespace is pinned there, what the runtime had made. A missing path
// (the runtime removed it) or a single namespace mount is left alone.
func repairPath(p string) error {
	st, err := os.Lstat(p)
	if err != nil || !st.Mode().IsRegular() {
		return nil
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(p, &sfs); err != nil {
		return nil
	}
	if sfs.Type == unix.NSFS_MAGIC {
		if n, err := countMounts(p); err != nil || n < 2 {
			return err
		}
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("repair %s: finish the switch: %w", p, err)
		}
		return nil
	}
	return pinFresh(p)
}

// pinFresh pins a new, empty network namespace at the plain file p.
func pinFresh(p string) error {
	errc := make(chan error, 1)
	go func() {
		// This thread enters the new namespace and is never unlocked: the
		// runtime discards it rather than reuse it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("repair %s: new namespace: %w", p, err)
			return
		}
		src := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		if err := unix.Mount(src, p, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("repair %s: pin a new namespace: %w", p, err)
			return
		}
		errc <- nil
	}()
	return <-errc
}
