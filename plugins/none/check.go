package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/netdrivers/netdrivers/pkg/cniplugin"
)

// Fallback tunnel devices the kernel puts into every namespace when their
// module is loaded; down and unconfigured, they carry nothing.
var fallbackTunnels = map[string]bool{
	"tunl0": true, "sit0": true, "ip6tnl0": true, "gre0": true, "gretap0": true,
	"erspan0": true, "ip6gre0": true, "ip_vti0": true, "ip6_vti0": true,
}

// check verifies that lo is up and, for "none", that it is alone: the
// isolation the user asked for.
func check(_ context.Context, r *cniplugin.Request[mode]) error {
	if r.ContNS == nil {
		return fmt.Errorf("CNI_NETNS: %w", r.NetNSErr)
	}
	nl, err := r.ContNS.Netlink()
	if err != nil {
		return err
	}
	lo, err := nl.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if !loopbackUp(lo) {
		return fmt.Errorf("lo in %s is down", r.NetNSPath)
	}
	if r.Conf == "loopback" {
		return nil
	}
	links, err := nl.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	var extra []string
	for _, l := range links {
		a := l.Attrs()
		if a.Name == "lo" || (fallbackTunnels[a.Name] && !loopbackUp(l)) {
			continue
		}
		extra = append(extra, fmt.Sprintf("%s (%s)", a.Name, l.Type()))
	}
	if len(extra) > 0 {
		return fmt.Errorf("network namespace %s should hold only lo but also holds %s", r.NetNSPath, strings.Join(extra, ", "))
	}
	return nil
}
