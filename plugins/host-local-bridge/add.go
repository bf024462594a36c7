package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/netdrivers/netdrivers/pkg/bridge"
	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/dnat"
	"github.com/netdrivers/netdrivers/pkg/hostport"
	"github.com/netdrivers/netdrivers/pkg/ipam"
	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/state"
	"github.com/netdrivers/netdrivers/pkg/undo"
	"github.com/netdrivers/netdrivers/pkg/veth"
)

const pluginName = "host-local-bridge"

// add attaches the container: every step pushes its undo, so a failure at
// any point leaves nothing. The intent record goes first so that a crash
// anywhere is undone by DEL or GC from the key alone.
func add(ctx context.Context, r *cniplugin.Request[*Conf]) (_ *current.Result, err error) {
	c := r.Conf
	var u undo.Stack
	defer u.OnError(&err)

	store, err := state.Open(ctx)
	if err != nil {
		return nil, err
	}
	hostVeth := veth.HostName(r.Key)
	// A record says this key was added before: if its host end is live,
	// this is a second ADD without DEL. Reading the record (one failed
	// open, as a rule) spares every first ADD the link lookup.
	if old, err := store.GetAttachment(r.Key); old != nil || err != nil {
		if err := veth.Unused(r.HostNS, hostVeth); err != nil {
			return nil, err
		}
	}
	rec := &state.Attachment{Network: r.Key.Network, ContainerID: r.Key.ContainerID, IfName: r.Key.IfName,
		Plugin: pluginName, NetNS: r.NetNSPath, Objects: map[string]string{"veth": hostVeth, "bridge": c.Bridge, "firewall": c.FirewallBackend}}
	if err := store.PutAttachment(rec); err != nil {
		return nil, err
	}
	u.Push(func() error { return store.DelAttachment(r.Key) })

	// The node side (port reservations, packet filter) needs nothing of the
	// container side but its addresses and the bridge: on a 2-core node they
	// overlap, the ports being reserved while IPAM allocates.
	node := startNodeSide(ctx, r, store)
	u.Push(node.undo)
	res := &current.Result{}
	if c.ipam != nil {
		if res, err = ipam.Allocate(ctx, c.ipam, r.Key); err != nil {
			return nil, err
		}
		u.Push(func() error { return ipam.Release(ctx, c.ipam, r.Key) })
	}
	br, err := bridge.Ensure(r.HostNS, bridge.Spec{Name: c.Bridge, MTU: c.MTU, Promisc: c.PromiscMode, McastSnooping: c.McastSnooping})
	if err != nil {
		return nil, err
	}
	gws := gatewayPrefixes(res, c.isGW)
	if err := bridge.SetGateways(r.HostNS, br, gws, c.ForceAddress); err != nil {
		return nil, err
	}
	node.give(res) // the rules set the bridge's sysctls: it must exist
	pair, err := veth.Add(r.HostNS, r.ContNS, veth.Spec{HostName: hostVeth, ContName: r.Key.IfName,
		MTU: c.MTU, ContMAC: c.mac, MasterIdx: br.Attrs().Index, NoLinkLocal: ipv4Only(res), HostNoIPv6: true})
	if err != nil {
		return nil, err
	}
	u.Push(func() error { return veth.Del(r.HostNS, hostVeth) })
	if err := bridge.SetPort(r.HostNS, pair.Host, bridge.PortFlags{Hairpin: c.hairpin, Isolated: !c.icc}); err != nil {
		return nil, err
	}
	if c.ipam != nil {
		if err := addDefaultRoutes(r.ContNS, res, c); err != nil {
			return nil, err
		}
		if err := ipam.Configure(r.ContNS, r.Key.IfName, res, ipam.ConfigureOpts{DAD: c.EnableDAD}); err != nil {
			return nil, err
		}
		// A reused address's neighbours (the node, other containers) learn
		// the new MAC now, not after their entry for the old one times out.
		if err := announce(r, br, hostVeth, pair, res); err != nil {
			log.Printf("announce %s: %v", r.Key.IfName, err) // costs only the announcement
		}
	}
	if err := netns.Record(store, r.Key, r.ContNS); err != nil {
		return nil, err
	}
	if err := node.wait(); err != nil {
		return nil, err
	}
	return buildResult(r, res, br, pair)
}

// nodeSide is ADD's node-side work, run on its own goroutine.
type nodeSide struct {
	done chan struct{}
	res  chan *current.Result // IPAM's result; closed without one when ADD failed first
	gave bool                 // only the ADD's goroutine reads and writes it
	err  error
	u    undo.Stack // what it did; empty when it failed (it undid itself)
}

// errNoAddresses ends the node side when ADD failed before IPAM answered.
var errNoAddresses = errors.New("ADD failed before its addresses were known")

// startNodeSide reserves the host ports and, once give passes the
// addresses (the bridge then exists), installs the attachment's
// packet-filter rules. The sockets it opens are the node's: every thread
// but one inside a netns.Handle.Do is in the node's namespace.
func startNodeSide(ctx context.Context, r *cniplugin.Request[*Conf], store *state.Store) *nodeSide {
	n := &nodeSide{done: make(chan struct{}), res: make(chan *current.Result, 1)}
	go func() {
		defer close(n.done)
		n.err = n.run(ctx, r, store)
	}()
	return n
}

func (n *nodeSide) run(ctx context.Context, r *cniplugin.Request[*Conf], store *state.Store) (err error) {
	defer n.u.OnError(&err)
	c := r.Conf
	if len(c.ports) > 0 {
		if err := hostport.Reserve(ctx, store, r.Key, c.ports, true); err != nil {
			return err
		}
		n.u.Push(func() error { return hostport.Release(ctx, store, r.Key) })
	}
	res, ok := <-n.res
	if !ok {
		return errNoAddresses
	}
	fw, err := dnat.New(c.FirewallBackend, r.HostNS, store)
	if err != nil {
		return err
	}
	if err := fw.Add(ctx, network(c, res), &dnat.Attachment{Key: r.Key, Addrs: ipam.Addrs(res), Ports: c.ports}); err != nil {
		return err
	}
	n.u.Push(func() error { return fw.Del(ctx, network(c, res), r.Key) })
	return nil
}

// give hands the node side the attachment's addresses.
func (n *nodeSide) give(res *current.Result) {
	n.res <- res
	n.gave = true
}

// wait returns the node side's error once it has finished.
func (n *nodeSide) wait() error {
	<-n.done
	return n.err
}

// undo takes back what the node side did, once it has finished.
func (n *nodeSide) undo() error {
	if !n.gave {
		close(n.res)
	}
	<-n.done
	return n.u.Run()
}

// announce sends the container's gratuitous ARP and unsolicited NA, once
// the bridge forwards on its port, for the addresses the node still maps
// to another MAC: an address reused soon after its last holder left.
// Broadcasting always would make every ADD cost O(attachments): the
// bridge floods each announcement to every port, and every container's
// stack processes it. The node talks to its containers (gateway, published
// ports), so its table is where a stale mapping shows.
func announce(r *cniplugin.Request[*Conf], br netlink.Link, hostVeth string, pair veth.Pair, res *current.Result) error {
	a := pair.Cont.Attrs()
	var stale []netip.Addr
	for _, ip := range ipam.Addrs(res) {
		mac, err := bridge.NeighMAC(r.HostNS, br.Attrs().Index, ip)
		if err != nil {
			return err
		}
		if mac != nil && mac.String() != a.HardwareAddr.String() {
			stale = append(stale, ip)
		}
	}
	if len(stale) == 0 {
		return nil
	}
	if err := bridge.WaitForwarding(r.HostNS, hostVeth); err != nil {
		return err
	}
	return r.ContNS.Announce(a.Index, a.HardwareAddr, stale)
}

// gatewayPrefixes are the bridge addresses: each IP's gateway (network+1
// when IPAM gave none, as the reference) with the IP's prefix length.
func gatewayPrefixes(res *current.Result, isGW bool) []netip.Prefix {
	if !isGW {
		return nil
	}
	var out []netip.Prefix
	for _, ipc := range res.IPs {
		if ipc.Gateway == nil {
			ipc.Gateway = firstHost(ipc.Address)
		}
		gw, ok := netip.AddrFromSlice(ipc.Gateway)
		if !ok {
			continue
		}
		ones, _ := ipc.Address.Mask.Size()
		out = append(out, netip.PrefixFrom(gw.Unmap(), ones))
	}
	return out
}

func firstHost(n net.IPNet) net.IP {
	ip := n.IP.Mask(n.Mask)
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	out := append(net.IP(nil), ip...)
	out[len(out)-1]++
	return out
}

// addDefaultRoutes appends a default route per family via the gateway,
// unless the container already has one for that family (a second network
// on eth1) and the config did not ask for it explicitly.
func addDefaultRoutes(cont *netns.Handle, res *current.Result, c *Conf) error {
	if !c.isDefaultGW {
		return nil
	}
	nl, err := cont.Netlink()
	if err != nil {
		return err
	}
	done := map[bool]bool{}
	for _, ipc := range res.IPs {
		v4 := ipc.Address.IP.To4() != nil
		if done[v4] || ipc.Gateway == nil {
			continue
		}
		done[v4] = true
		dst := net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
		family := netlink.FAMILY_V4
		if !v4 {
			dst, family = net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}, netlink.FAMILY_V6
		}
		if hasDefault(res.Routes, dst) {
			continue
		}
		route := &types.Route{Dst: dst, GW: ipc.Gateway}
		existing, err := nl.RouteListFiltered(family, &netlink.Route{Dst: nil}, netlink.RT_FILTER_DST)
		if err != nil {
			return fmt.Errorf("list default routes in container: %w", err)
		}
		if len(existing) > 0 {
			if !c.explicitDefaultGW {
				continue
			}
			route.Priority = 1024 // asked for: a second default route, behind the first
		}
		res.Routes = append(res.Routes, route)
	}
	return nil
}

func hasDefault(routes []*types.Route, dst net.IPNet) bool {
	for _, rt := range routes {
		if rt.Dst.String() == dst.String() {
			return true
		}
	}
	return false
}

// ipv4Only reports whether the attachment got addresses, none of them
// IPv6: Docker's IPv4-only network, whose containers have no IPv6.
func ipv4Only(res *current.Result) bool {
	for _, ip := range res.IPs {
		if ip.Address.IP.To4() == nil {
			return false
		}
	}
	return len(res.IPs) > 0
}

// network describes c to the firewall; res (when known) supplies the
// subnets of a delegated IPAM, whose ranges the plugin cannot read.
func network(c *Conf, res *current.Result) *dnat.Network {
	n := c.network()
	if len(n.Subnets) == 0 && res != nil {
		for _, p := range ipam.Prefixes(res) {
			n.Subnets = append(n.Subnets, p.Masked())
		}
	}
	if c.isGW && res != nil {
		n.Gateways = nil
		for _, p := range gatewayPrefixes(res, true) {
			n.Gateways = append(n.Gateways, p.Addr())
		}
	}
	return n
}

// buildResult has the reference bridge's shape: bridge, host veth, then
// the container interface (with sandbox); IPs point at the container one.
// A prevResult is passed on with ours appended.
func buildResult(r *cniplugin.Request[*Conf], res *current.Result, br netlink.Link, pair veth.Pair) (*current.Result, error) {
	out := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	prev, err := r.Base.Prev()
	if err != nil {
		return nil, err
	}
	if prev != nil {
		out = prev
	}
	base := len(out.Interfaces)
	out.Interfaces = append(out.Interfaces,
		&current.Interface{Name: br.Attrs().Name, Mac: br.Attrs().HardwareAddr.String()},
		&current.Interface{Name: pair.Host.Attrs().Name, Mac: pair.Host.Attrs().HardwareAddr.String()},
		&current.Interface{Name: r.Key.IfName, Mac: pair.Cont.Attrs().HardwareAddr.String(), Sandbox: r.NetNSPath})
	for _, ipc := range res.IPs {
		ipc.Interface = current.Int(base + 2)
		out.IPs = append(out.IPs, ipc)
	}
	out.Routes = append(out.Routes, res.Routes...)
	out.DNS = dnsFor(r.Conf, res.DNS, out.DNS)
	return out, nil
}

// dnsFor picks DNS: the runtime's dns capability, else the config's
// "dns", else IPAM's (resolvConf), else what a prevResult said.
func dnsFor(c *Conf, fromIPAM, prev types.DNS) types.DNS {
	if d := c.RuntimeConfig.DNS; d != nil && len(d.Servers)+len(d.Searches)+len(d.Options) > 0 {
		return types.DNS{Nameservers: d.Servers, Search: d.Searches, Options: d.Options}
	}
	if !c.DNS.IsEmpty() {
		return c.DNS
	}
	if !fromIPAM.IsEmpty() {
		return fromIPAM
	}
	return prev
}
