package dnat

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/netdrivers/netdrivers/pkg/netconf"
)

// BenchmarkNftAddDel measures, in-process, one attachment's Add, Check
// and Del (2 published TCP ports) with 0, 500 and 900 attachments of the
// same network already in place: the nftables backend must stay flat.
// Del is the whole verb, closing its netlink socket included.
//
//	go test -run '^$' -bench NftAddDel -benchtime 200x ./pkg/dnat/
func BenchmarkNftAddDel(b *testing.B) {
	for _, existing := range []int{0, 500, 900} {
		b.Run(fmt.Sprintf("existing=%d", existing), func(b *testing.B) {
			ctx := context.Background()
			w := newWorld(b)
			bn := w.newBridge(1, ModeNAT)
			addrs := w.addCtr(bn, 0).attachment().Addrs
			be := w.backend(backendCase{kind: BackendNftables})
			att := func(i int) *Attachment {
				return &Attachment{Key: netconf.Key{Network: bn.Name, ContainerID: fmt.Sprintf("bench%d", i), IfName: "eth0"},
					Addrs: addrs, Ports: []netconf.Port{port("tcp", "", uint16(10000+2*i), 80), port("tcp", "", uint16(10001+2*i), 443)}}
			}
			for i := range existing + 1 { // +1: the network's shared rules exist in both cases
				if err := be.Add(ctx, bn.Network, att(i)); err != nil {
					b.Fatal(err)
				}
			}
			// Probes take turns: a host port re-published within the tick
			// after its Del waits for the retired element (see retire).
			var probes []*Attachment
			for i := range 8 {
				probes = append(probes, att(existing+1+i))
			}
			var add, check, del time.Duration
			for n := 0; b.Loop(); n++ {
				probe := probes[n%len(probes)]
				t0 := time.Now()
				if err := be.Add(ctx, bn.Network, probe); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if err := be.Check(ctx, bn.Network, probe); err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				if err := be.Del(ctx, bn.Network, probe.Key); err != nil {
					b.Fatal(err)
				}
				add, check, del = add+t1.Sub(t0), check+t2.Sub(t1), del+time.Since(t2)
			}
			b.ReportMetric(float64(add.Microseconds())/float64(b.N), "add-µs/op")
			b.ReportMetric(float64(check.Microseconds())/float64(b.N), "check-µs/op")
			b.ReportMetric(float64(del.Microseconds())/float64(b.N), "del-µs/op")
			if err := be.GC(ctx, bn.Network, nil); err != nil {
				b.Fatal(err)
			}
		})
	}
}
