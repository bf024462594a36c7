package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/netdrivers/netdrivers/pkg/bridge"
	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/dnat"
	"github.com/netdrivers/netdrivers/pkg/hostport"
	"github.com/netdrivers/netdrivers/pkg/ipam"
	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/state"
	"github.com/netdrivers/netdrivers/pkg/veth"
)

// check compares the live state with prevResult and says what differs:
// the veth pair and its bridge port, the container's addresses and
// routes, the address store, the firewall rules and the port
// reservations. It changes nothing.
func check(ctx context.Context, r *cniplugin.Request[*Conf]) error {
	c := r.Conf
	prev, _, cont, err := r.ContainerIface()
	if err != nil {
		return err
	}
	mac, err := net.ParseMAC(cont.Mac)
	if err != nil {
		return fmt.Errorf("prevResult: interface %q has MAC %q: %w", cont.Name, cont.Mac, err)
	}
	hostVeth := veth.HostName(r.Key)
	if err := veth.Check(r.HostNS, r.ContNS, hostVeth, r.Key.IfName, mac); err != nil {
		return err
	}
	if err := bridge.Check(r.HostNS, c.Bridge, gatewayPrefixes(prev, c.isGW), hostVeth,
		bridge.PortFlags{Hairpin: c.hairpin, Isolated: !c.icc}); err != nil {
		return err
	}
	if err := checkContainer(r.ContNS, r.Key.IfName, prev); err != nil {
		return err
	}
	if c.ipam != nil {
		if err := ipam.Check(ctx, c.ipam, r.Key, prev); err != nil {
			return err
		}
	}
	store, err := state.Open(ctx)
	if err != nil {
		return err
	}
	if err := checkPorts(ctx, store, r, c); err != nil {
		return err
	}
	fw, err := dnat.New(c.FirewallBackend, r.HostNS, store)
	if err != nil {
		return err
	}
	return fw.Check(ctx, network(c, prev), &dnat.Attachment{Key: r.Key, Addrs: ipam.Addrs(prev), Ports: c.ports})
}

// checkContainer verifies every address and route of prev inside cont.
func checkContainer(cont *netns.Handle, ifName string, prev *current.Result) error {
	nl, err := cont.Netlink()
	if err != nil {
		return err
	}
	link, err := nl.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("container interface %q: %w", ifName, err)
	}
	have, err := netns.AddrList(nl, link, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	for _, ipc := range prev.IPs {
		found := false
		for _, a := range have {
			found = found || a.IPNet.String() == ipc.Address.String()
		}
		if !found {
			return fmt.Errorf("container interface %q lacks address %s", ifName, ipc.Address.String())
		}
	}
	routes, err := nl.RouteList(link, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	for _, want := range prev.Routes {
		found := false
		for _, rt := range routes {
			dst := "<nil>"
			if rt.Dst != nil {
				dst = rt.Dst.String()
			}
			isDefault := rt.Dst == nil || dst == "0.0.0.0/0" || dst == "::/0"
			wantDefault := want.Dst.String() == "0.0.0.0/0" || want.Dst.String() == "::/0"
			sameDst := dst == want.Dst.String() || (isDefault && wantDefault && (rt.Gw.To4() != nil) == (want.Dst.IP.To4() != nil))
			found = found || (sameDst && (want.GW == nil || rt.Gw.Equal(want.GW)))
		}
		if !found {
			return fmt.Errorf("container lacks route to %s via %v on %q", want.Dst.String(), want.GW, ifName)
		}
	}
	return nil
}

// checkPorts verifies that exactly the configured ports are reserved.
func checkPorts(ctx context.Context, store *state.Store, r *cniplugin.Request[*Conf], c *Conf) error {
	held, err := hostport.Held(ctx, store, r.Key)
	if err != nil {
		return err
	}
	var missing []error
	for _, p := range c.ports {
		ok := false
		for _, h := range held {
			ok = ok || (h.HostPort == p.HostPort && h.Protocol == p.Protocol && sameHost(h.HostIP, p.HostIP))
		}
		if !ok {
			missing = append(missing, fmt.Errorf("host port %s is not reserved", p))
		}
	}
	return errors.Join(missing...)
}

func sameHost(a, b netip.Addr) bool {
	return a == b || (!a.IsValid() || a.IsUnspecified()) && (!b.IsValid() || b.IsUnspecified())
}
