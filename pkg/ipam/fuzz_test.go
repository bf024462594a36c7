package ipam

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/jsonlite/jsontest"
	"github.com/netdrivers/netdrivers/pkg/netconf"
)

// Fuzz targets for everything parsed from outside: the netconf's ipam
// section with its ranges, CIDRs and requested IPs, CNI_ARGS, and the
// store's files (address entries, index buckets, index state). Seeds are
// in testdata/fuzz/<Target>/. Run: go test ./pkg/ipam -fuzz FuzzLoad -fuzztime 5s

func FuzzLoad(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local","subnet":"10.0.0.0/24"}}`), "IP=10.0.0.5")
	f.Fuzz(func(t *testing.T, conf []byte, cniArgs string) {
		jsontest.Same(t, conf, func() any { return new(netJSON) })
		jsontest.Same(t, conf, func() any { return new(ipamJSON) })
		args, err := netconf.ParseCNIArgs(cniArgs, CNIArgs...)
		if err != nil {
			return
		}
		c, err := Load(conf, args)
		if err != nil {
			if cnierr.CodeOf(err) == cnierr.Internal {
				t.Fatalf("Load error without a CNI code: %v", err)
			}
			return
		}
		if !c.Builtin() {
			return
		}
		checkRanges(t, c)
		c.Subnets()
		c.Gateways()
	})
}

// checkRanges asserts what the allocator relies on: non-empty, in-subnet,
// ordered, one family per set, no overlaps, and a walk that ends.
func checkRanges(t *testing.T, c *Config) {
	if len(c.Ranges) == 0 {
		t.Fatal("accepted with no ranges")
	}
	for i, set := range c.Ranges {
		for _, r := range set {
			if !r.Subnet.Contains(r.Start) || !r.Subnet.Contains(r.End) || !r.Subnet.Contains(r.Gateway) || r.Start.Compare(r.End) > 0 {
				t.Fatalf("set %d: inconsistent range %+v", i, r)
			}
			if r.Start.Is4() != set[0].Start.Is4() {
				t.Fatalf("set %d mixes families", i)
			}
		}
		for j := range i {
			if set.overlaps(c.Ranges[j]) {
				t.Fatalf("sets %d and %d overlap", i, j)
			}
		}
		it := newIter(set, set[0].End)
		for n := 0; n < 4096; n++ {
			ip, r, ok := it.next()
			if !ok {
				break
			}
			if !r.Contains(ip) || ip == r.Gateway {
				t.Fatalf("walk gave %s outside its range or the gateway", ip)
			}
		}
	}
	for _, ip := range c.Requested {
		if !ip.IsValid() || ip.Zone() != "" || ip.Is4In6() {
			t.Fatalf("requested IP %v not canonical", ip)
		}
	}
}

func FuzzParseEntry(f *testing.F) {
	f.Add([]byte("c1\r\neth0"))
	f.Fuzz(func(t *testing.T, data []byte) {
		o, err := parseEntry(data)
		if err != nil {
			return
		}
		back, err := parseEntry(o.content())
		if err != nil || back.ID != o.ID || (o.IfName != "" && back != o) {
			t.Fatalf("entry %q parsed as %+v does not round-trip: %+v, %v", data, o, back, err)
		}
	})
}

func FuzzParseBucket(f *testing.F) {
	f.Add([]byte(recordMagic + "\nowner \"c\" \"eth0\"\nip 10.0.0.2 -\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, err := parseBucket(data)
		if err != nil {
			return
		}
		var kept []*record
		for _, r := range recs {
			if len(r.IPs) > 0 {
				kept = append(kept, r)
			}
		}
		enc := encodeBucket(kept)
		back, err := parseBucket(enc)
		if err != nil {
			t.Fatalf("re-encoded bucket does not parse: %v\n%q", err, enc)
		}
		if len(enc)%bucketAlign != 0 {
			t.Fatalf("bucket of %d bytes is not padded", len(enc))
		}
		for _, r := range back {
			for _, rip := range r.IPs {
				if _, ok := parseIPName(rip.IP.String()); !ok {
					t.Fatalf("bucket holds non-canonical address %v", rip.IP)
				}
			}
		}
		if len(back) != len(kept) {
			t.Fatalf("round trip kept %d of %d records", len(back), len(kept))
		}
	})
}

func FuzzParseState(f *testing.F) {
	f.Add((&indexState{Boot: "0f1e2d3c-0000-4000-8000-000000000000", Dir: dirStamp{1, 2, 3, 4, 5}}).encode())
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := parseState(data)
		if err != nil {
			return
		}
		back, err := parseState(st.encode())
		if err != nil || !reflect.DeepEqual(back, st) {
			t.Fatalf("state %+v does not round-trip: %+v, %v", st, back, err)
		}
	})
}

func FuzzParseIPName(f *testing.F) {
	f.Add("10.0.0.1")
	f.Fuzz(func(t *testing.T, name string) {
		ip, ok := parseIPName(name)
		if ok && (ip.String() != name || !ip.IsValid()) {
			t.Fatalf("%q accepted as %v", name, ip)
		}
		if ok && netip.MustParseAddr(name) != ip {
			t.Fatalf("%q mis-parsed", name)
		}
	})
}
