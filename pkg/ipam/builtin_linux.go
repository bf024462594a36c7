package ipam

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/safefile"
)

// The built-in host-local verbs. Each takes the network's lock once, for
// the whole call (the reference takes it per range set); everything that
// needs no store (config, resolv.conf, boot ID) is done before.

func ownerOf(key netconf.Key) owner { return owner{ID: key.ContainerID, IfName: key.IfName} }

func bootID() string {
	b, err := safefile.BootID()
	if err != nil || !validBoot(b) {
		return ""
	}
	return b
}

func allocate(ctx context.Context, c *Config, key netconf.Key) (_ *current.Result, err error) {
	o := ownerOf(key)
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	for _, r := range c.Routes {
		res.Routes = append(res.Routes, r.Copy())
	}
	if c.ResolvConf != "" {
		dns, err := parseResolvConf(c.ResolvConf)
		if err != nil {
			return nil, err
		}
		res.DNS = *dns
	}
	boot := bootID()
	s, err := openStore(ctx, c, boot, true)
	if err != nil {
		return nil, err
	}
	defer s.close()
	if err := s.sync(); err != nil {
		return nil, err
	}
	rec := s.readRecord(o)
	held := s.verified(rec)
	rec.IPs = held
	if o.IfName != "" { // the reference also counts old one-line entries
		held = append(held, s.verified(s.readRecord(owner{ID: o.ID}))...)
	}
	leases, err := allocateIn(s, c.Ranges, o, c.Requested, addrsOf(held))
	if err != nil {
		return nil, err
	}
	for _, l := range leases {
		rec.IPs = append(rec.IPs, recordIP{IP: l.IP, Boot: boot})
		res.IPs = append(res.IPs, &current.IPConfig{
			Address: net.IPNet{IP: l.IP.AsSlice(), Mask: net.CIDRMask(l.Range.Subnet.Bits(), l.IP.BitLen())},
			Gateway: l.Range.Gateway.AsSlice(),
		})
	}
	s.writeRecord(rec)
	return res, nil
}

// verified keeps the addresses of r whose files still name r's owner.
func (s *store) verified(r *record) []recordIP {
	var out []recordIP
	for _, rip := range r.IPs {
		if h, err := s.readEntry(rip.IP); err == nil && h == r.Owner {
			out = append(out, rip)
		}
	}
	return out
}

func addrsOf(ips []recordIP) []netip.Addr {
	out := make([]netip.Addr, len(ips))
	for i, rip := range ips {
		out[i] = rip.IP
	}
	return out
}

// release removes key's entries; old one-line entries of the container
// only when it has no current ones, as the reference does.
func release(ctx context.Context, c *Config, key netconf.Key) error {
	s, err := openStore(ctx, c, bootID(), false)
	if err != nil || s == nil {
		return err
	}
	defer s.close()
	if err := s.sync(); err != nil {
		return err
	}
	o := ownerOf(key)
	var errs []error
	for _, who := range []owner{o, {ID: o.ID}} {
		rec := s.readRecord(who)
		if len(rec.IPs) == 0 {
			continue
		}
		found := false
		for _, rip := range s.verified(rec) {
			found = true
			errs = append(errs, s.remove(rip.IP))
		}
		rec.IPs = nil
		s.writeRecord(rec)
		if found {
			break
		}
	}
	return errors.Join(errs...)
}

func addresses(ctx context.Context, c *Config, key netconf.Key) ([]netip.Prefix, error) {
	s, err := openStore(ctx, c, bootID(), false)
	if err != nil || s == nil {
		return nil, err
	}
	defer s.close()
	if err := s.sync(); err != nil {
		return nil, err
	}
	o := ownerOf(key)
	held := s.verified(s.readRecord(o))
	if len(held) == 0 && o.IfName != "" {
		held = s.verified(s.readRecord(owner{ID: o.ID}))
	}
	var out []netip.Prefix
	for _, rip := range held {
		out = append(out, c.prefixOf(rip.IP))
	}
	return out, nil
}

// prefixOf gives ip the length of the subnet that holds it now (the
// host length if the config no longer covers it).
func (c *Config) prefixOf(ip netip.Addr) netip.Prefix {
	for _, set := range c.Ranges {
		for _, r := range set {
			if r.Subnet.Contains(ip) {
				return netip.PrefixFrom(ip, r.Subnet.Bits())
			}
		}
	}
	return netip.PrefixFrom(ip, ip.BitLen())
}

// check verifies that key holds every address of prev that lies in the
// configured ranges; without such addresses (or prev), that it holds at
// least one, as the reference CHECK does. It changes nothing.
func check(ctx context.Context, c *Config, key netconf.Key, prev *current.Result) error {
	o := ownerOf(key)
	var want []netip.Addr
	if prev != nil {
		for _, ipc := range prev.IPs {
			ip, ok := netip.AddrFromSlice(ipc.Address.IP)
			if ok && c.inRanges(ip.Unmap()) {
				want = append(want, ip.Unmap())
			}
		}
	}
	if len(want) == 0 {
		held, err := addresses(ctx, c, key)
		if err == nil && len(held) == 0 {
			err = fmt.Errorf("%s holds no address in %s: %w", o, filepath.Join(c.DataDir, c.network), ErrNotHeld)
		}
		return err
	}
	s, err := openStore(ctx, c, bootID(), false)
	if err != nil {
		return err
	}
	if s == nil {
		return fmt.Errorf("%s: no store at %s: %w", o, filepath.Join(c.DataDir, c.network), ErrNotHeld)
	}
	defer s.close()
	var errs []error
	for _, ip := range want {
		h, err := s.readEntry(ip)
		switch {
		case errors.Is(err, errNoEntry):
			errs = append(errs, fmt.Errorf("%s is not reserved: %w", ip, ErrNotHeld))
		case err != nil:
			errs = append(errs, fmt.Errorf("entry of %s: %w: %w", ip, ErrNotHeld, err))
		case !o.matches(h):
			errs = append(errs, fmt.Errorf("%s is held by %s, not %s: %w", ip, h, o, ErrNotHeld))
		}
	}
	return errors.Join(errs...)
}

func (c *Config) inRanges(ip netip.Addr) bool {
	for _, set := range c.Ranges {
		if set.Contains(ip) {
			return true
		}
	}
	return false
}

// gc releases every entry whose attachment is not in valid, with one walk
// (reclaiming earlier boots' entries too when this is the boot's first
// call). Errors are joined; every entry is tried.
func gc(ctx context.Context, c *Config, valid []types.GCAttachment) error {
	s, err := openStore(ctx, c, bootID(), false)
	if err != nil || s == nil {
		return err
	}
	defer s.close()
	keep := map[owner]bool{}
	ids := map[string]bool{}
	for _, a := range valid {
		keep[owner{ID: a.ContainerID, IfName: a.IfName}] = true
		ids[a.ContainerID] = true
	}
	state := s.readState()
	_, err = s.rebuild(rebuildOpts{
		reclaim: state == nil || state.Boot != s.boot,
		valid: func(o owner) bool {
			if o.IfName == "" {
				return ids[o.ID]
			}
			return keep[o]
		},
	})
	return err
}

// status fails (code 50) when the store cannot be written: the network's
// directory, or the nearest existing one above it, is not a writable
// directory or is on a full disk, or its lock is not a plain file (every
// ADD would fail). It creates nothing.
func status(c *Config) error {
	dir := filepath.Join(c.DataDir, c.network)
	if st, err := os.Lstat(filepath.Join(dir, lockName)); err == nil && !st.Mode().IsRegular() {
		return cnierr.Errorf(cnierr.NotAvailable, "address store %s: its lock is a %s, not a file", dir, st.Mode().Type())
	}
	for p := dir; ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) && p != filepath.Dir(p) {
			continue
		}
		if err == nil && !st.IsDir() {
			err = fmt.Errorf("not a directory")
		}
		if err == nil {
			err = unix.Access(p, unix.W_OK|unix.X_OK)
		}
		if err == nil {
			err = probeSpace(p)
		}
		if errors.Is(err, unix.ENOSPC) {
			return cnierr.Errorf(cnierr.NotAvailable, "address store %s is full: %s: %w", dir, p, err)
		}
		if err != nil {
			return cnierr.Errorf(cnierr.NotAvailable, "address store %s is not writable: %s: %w", dir, p, err)
		}
		return nil
	}
}

// probeSpace is safefile.ProbeSpace, except where the file system has no
// O_TMPFILE: the store then writes named files, which are not probed.
func probeSpace(dir string) error {
	err := safefile.ProbeSpace(dir)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EINVAL) {
		return nil
	}
	return err
}
