package ipam

import (
	"context"
	"errors"
	"net"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/netns"
)

// dadTimeout bounds the wait for IPv6 duplicate address detection when
// Configure is asked to keep it.
const dadTimeout = 5 * time.Second

// Configure puts res's addresses (IFA_F_NODAD unless dad) and routes onto ifName inside ns,
// through ns's netlink handle (no setns). Routes without a gateway get the gateway of the
// same-family IP, as the reference ipam.ConfigureIface does.
//
// Addresses whose Interface index names another interface of res are
// skipped (a chained result may list host-side interfaces too). For IPv6
// it sets disable_ipv6=0 on lo and ifName and keep_addr_on_down=1 on
// ifName, as the reference does. It brings ifName up.
// Equivalent to: ip -n NS addr add ADDR dev IF nodad; ip -n NS link set IF up;
// ip -n NS route add DST via GW dev IF
func Configure(ns *netns.Handle, ifName string, res *current.Result, o ConfigureOpts) error {
	dad := o.DAD
	nl, err := ns.Netlink()
	if err != nil {
		return err
	}
	link, err := nl.LinkByName(ifName)
	if err != nil {
		return cnierr.Errorf(cnierr.Internal, "find %q in %s: %w", ifName, ns.Path, err)
	}
	ips := ipsFor(res, ifName)
	if err := setSysctls(ns, ifName, hasV6(ips)); err != nil {
		return err
	}
	var v4gw, v6gw net.IP
	for _, ipc := range ips {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: ipc.Address.IP, Mask: ipc.Address.Mask}}
		if !dad && ipc.Address.IP.To4() == nil {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := nl.AddrAdd(link, addr); err != nil {
			return cnierr.Errorf(cnierr.Internal, "add address %s to %q: %w", ipc.Address.String(), ifName, err)
		}
		if ipc.Gateway != nil {
			if ipc.Gateway.To4() != nil && v4gw == nil {
				v4gw = ipc.Gateway
			} else if ipc.Gateway.To4() == nil && v6gw == nil {
				v6gw = ipc.Gateway
			}
		}
	}
	if err := nl.LinkSetUp(link); err != nil {
		return cnierr.Errorf(cnierr.Internal, "set %q up: %w", ifName, err)
	}
	if dad && hasV6(ips) {
		if err := settle(ns, link); err != nil {
			return err
		}
	}
	return addRoutes(nl, link, res.Routes, v4gw, v6gw)
}

// addRoutes adds routes through link; one without a gateway gets its
// family's. Equivalent to: ip -n NS route append DST via GW dev IF
func addRoutes(nl netlinksafe.Handle, link netlink.Link, routes []*types.Route, v4gw, v6gw net.IP) error {
	for _, r := range routes {
		gw := r.GW
		if gw == nil {
			if r.Dst.IP.To4() != nil {
				gw = v4gw
			} else {
				gw = v6gw
			}
		}
		rt := &netlink.Route{Dst: &net.IPNet{IP: r.Dst.IP, Mask: r.Dst.Mask}, LinkIndex: link.Attrs().Index, Gw: gw, Priority: r.Priority}
		if r.Table != nil {
			rt.Table = *r.Table
		}
		if r.Scope != nil {
			rt.Scope = netlink.Scope(*r.Scope)
		}
		if err := nl.RouteAddEcmp(rt); err != nil {
			return cnierr.Errorf(cnierr.Internal, "add route %s via %v dev %q: %w", r.Dst.String(), gw, link.Attrs().Name, err)
		}
	}
	return nil
}

// ipsFor picks the addresses meant for ifName: those without an interface
// index, or whose index names ifName.
func ipsFor(res *current.Result, ifName string) []*current.IPConfig {
	var out []*current.IPConfig
	for _, ipc := range res.IPs {
		if ipc == nil || ipc.Address.IP == nil {
			continue
		}
		if ipc.Interface != nil {
			i := *ipc.Interface
			if i < 0 || i >= len(res.Interfaces) || res.Interfaces[i].Name != ifName {
				continue
			}
		}
		out = append(out, ipc)
	}
	return out
}

func hasV6(ips []*current.IPConfig) bool {
	for _, ipc := range ips {
		if ipc.Address.IP.To4() == nil {
			return true
		}
	}
	return false
}

// ConfigureOpts tunes Configure.
type ConfigureOpts struct {
	DAD bool // keep IPv6 duplicate address detection (and wait for it)
}

// setSysctls clears, for IPv6, disable_ipv6 on lo and ifName and sets
// keep_addr_on_down on ifName, inside ns, as the reference does.
func setSysctls(ns *netns.Handle, ifName string, v6 bool) error {
	if !v6 {
		return nil
	}
	return ns.Do(func() error {
		for _, dev := range []string{"lo", ifName} {
			p := "/proc/sys/net/ipv6/conf/" + dev + "/disable_ipv6"
			if b, err := os.ReadFile(p); err == nil && len(b) > 0 && b[0] == '0' {
				continue
			}
			if err := os.WriteFile(p, []byte("0"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
				return cnierr.Errorf(cnierr.Internal, "enable IPv6 on %q: %w", dev, err)
			}
		}
		p := "/proc/sys/net/ipv6/conf/" + ifName + "/keep_addr_on_down"
		if err := os.WriteFile(p, []byte("1"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
			return cnierr.Errorf(cnierr.Internal, "set keep_addr_on_down on %q: %w", ifName, err)
		}
		return nil
	})
}

// settle waits until no address of link is tentative (DAD done), as the
// reference's ip.SettleAddresses does; a DAD failure is an error.
func settle(ns *netns.Handle, link netlink.Link) error {
	ctx, cancel := context.WithTimeout(context.Background(), dadTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		addrs, err := netns.AddrList(ns.NL, link, netlink.FAMILY_V6)
		if err != nil {
			return cnierr.Errorf(cnierr.Internal, "list addresses of %q: %w", link.Attrs().Name, err)
		}
		pending := false
		for _, a := range addrs {
			if a.Flags&unix.IFA_F_DADFAILED != 0 {
				return cnierr.Errorf(cnierr.Internal, "address %s on %q: duplicate address detected", a.IPNet, link.Attrs().Name)
			}
			if a.Flags&unix.IFA_F_TENTATIVE != 0 {
				pending = true
			}
		}
		if !pending {
			return nil
		}
		select {
		case <-ctx.Done():
			return cnierr.Errorf(cnierr.TryAgainLater, "addresses of %q still tentative after %s", link.Attrs().Name, dadTimeout)
		case <-tick.C:
		}
	}
}
