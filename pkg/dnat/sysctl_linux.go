package dnat

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/netdrivers/netdrivers/pkg/netns"
)

// readSysctl reads /proc/sys/<key> in the calling thread's namespace.
func readSysctl(key string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc/sys", key))
	return string(bytes.TrimSpace(b)), err
}

// setSysctl writes value unless the key already holds it.
func setSysctl(key, value string) error {
	if cur, err := readSysctl(key); err == nil && cur == value {
		return nil
	}
	if err := os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644); err != nil {
		return fmt.Errorf("set sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

// ensureSysctls sets, in the host namespace, what network n's rules need:
// IPv4/IPv6 forwarding (not for isolated networks) and route_localnet on
// the bridge so that 127.0.0.1 can be DNATed into it.
// Equivalent to: sysctl -w net.ipv4.ip_forward=1 net.ipv4.conf.BR.route_localnet=1
func ensureSysctls(host *netns.Handle, n *Network) error {
	if n.mode() == ModeIsolated {
		return nil
	}
	return host.Do(func() error {
		if n.hasFamily(true) {
			if err := setSysctl("net/ipv4/ip_forward", "1"); err != nil {
				return err
			}
			if err := setSysctl(filepath.Join("net/ipv4/conf", n.Bridge, "route_localnet"), "1"); err != nil {
				return err
			}
		}
		if n.hasFamily(false) {
			return enableForwarding6()
		}
		return nil
	})
}

// enableForwarding6 switches IPv6 forwarding on. Forwarding makes the
// kernel ignore router advertisements on interfaces with accept_ra=1, so
// those are moved to accept_ra=2 first (accept even when forwarding).
func enableForwarding6() error {
	if cur, err := readSysctl("net/ipv6/conf/all/forwarding"); err == nil && cur == "1" {
		return nil
	}
	dirs, err := os.ReadDir("/proc/sys/net/ipv6/conf")
	if err != nil {
		return fmt.Errorf("list ipv6 interfaces: %w", err)
	}
	var errs []error
	for _, d := range dirs {
		if d.Name() == "all" || d.Name() == "default" || d.Name() == "lo" {
			continue
		}
		key := filepath.Join("net/ipv6/conf", d.Name(), "accept_ra")
		if v, err := readSysctl(key); err == nil && v == "1" {
			if err := setSysctl(key, "2"); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return setSysctl("net/ipv6/conf/all/forwarding", "1")
}

// checkSysctls reports which of the settings ensureSysctls makes are off.
func checkSysctls(host *netns.Handle, n *Network) error {
	if n.mode() == ModeIsolated {
		return nil
	}
	return host.Do(func() error {
		var errs []error
		want := func(key, val string) {
			if cur, err := readSysctl(key); err != nil || cur != val {
				errs = append(errs, fmt.Errorf("%w: sysctl %s is %q, want %q", ErrMissing, key, cur, val))
			}
		}
		if n.hasFamily(true) {
			want("net/ipv4/ip_forward", "1")
			want(filepath.Join("net/ipv4/conf", n.Bridge, "route_localnet"), "1")
		}
		if n.hasFamily(false) {
			want("net/ipv6/conf/all/forwarding", "1")
		}
		return errors.Join(errs...)
	})
}
