package main

import (
	"context"
	"fmt"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// runKernel measures the kernel floor: what a veth-based plugin cannot
// avoid. ADD creates a veth pair in the host namespace with its peer
// (eth0) in a container namespace; DEL deletes it, which waits for an RCU
// grace period. No process is started. CHECK has no kernel equivalent.
func runKernel(ctx context.Context, sc Scenario, cfg *config, env *hostEnv, run *Run) error {
	pool, err := env.containers(sc.N)
	if err != nil {
		return err
	}
	for _, c := range cfg.cs {
		// One netlink socket per caller: a shared handle serialises requests.
		handles := make([]netlinksafe.Handle, c)
		for i := range handles {
			h, err := netlinksafe.NewHandleAt(vnetns.NsHandle(env.host.Handle().Fd()), unix.NETLINK_ROUTE)
			if err != nil {
				return fmt.Errorf("netlink socket in the host namespace: %w", err)
			}
			defer h.Close()
			handles[i] = h
		}
		name := func(i int) string { return fmt.Sprintf("vk%d", i) }
		r, err := quietRound(ctx, &cfg.retryLeft, func() (*Round, error) {
			r := &Round{W: 0, C: c, Verbs: map[string]*VerbRun{}}
			r.Verbs["ADD"] = batch(ctx, c, sc.N, func(_ context.Context, w, i int) error {
				la := netlink.NewLinkAttrs()
				la.Name = name(i)
				return handles[w].LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "eth0",
					PeerNamespace: netlink.NsFd(pool[i].Handle().Fd())})
			})
			links := make([]netlink.Link, sc.N)
			for i := range links {
				var err error
				if links[i], err = handles[0].LinkByName(name(i)); err != nil {
					return nil, fmt.Errorf("find %s: %w", name(i), err)
				}
			}
			r.Verbs["DEL"] = batch(ctx, c, sc.N, func(_ context.Context, w, i int) error {
				return handles[w].LinkDel(links[i])
			})
			for _, v := range r.Verbs {
				if v.FirstError != "" {
					return r, fmt.Errorf("kernel floor at C=%d: %s", c, v.FirstError)
				}
			}
			return r, nil
		})
		if r != nil {
			run.Rounds = append(run.Rounds, r)
		}
		if err != nil {
			return err
		}
		progress("  %s: C=%d  veth add p50 %.2f ms  veth del p50 %.2f ms", sc.Name, c,
			r.Verbs["ADD"].Summary.P50, r.Verbs["DEL"].Summary.P50)
	}
	return nil
}
