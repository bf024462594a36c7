package ipam

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"testing"

	refalloc "github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"
	refstore "github.com/containernetworking/plugins/plugins/ipam/host-local/backend/testing"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
)

// memPool is the allocator's store in memory.
type memPool struct {
	m    map[netip.Addr]owner
	last map[int]netip.Addr
}

func newMemPool() *memPool {
	return &memPool{m: map[netip.Addr]owner{}, last: map[int]netip.Addr{}}
}

func (p *memPool) reserve(ip netip.Addr, o owner) (bool, error) {
	if _, ok := p.m[ip]; ok {
		return false, nil
	}
	p.m[ip] = o
	return true, nil
}

func (p *memPool) remove(ip netip.Addr) error { delete(p.m, ip); return nil }

func (p *memPool) readEntry(ip netip.Addr) (owner, error) {
	o, ok := p.m[ip]
	if !ok {
		return owner{}, errNoEntry
	}
	return o, nil
}

func (p *memPool) lastReserved(set int) netip.Addr { return p.last[set] }

func (p *memPool) setLastReserved(set int, ip netip.Addr) error { p.last[set] = ip; return nil }

func (p *memPool) held(o owner) []netip.Addr {
	var out []netip.Addr
	for ip, h := range p.m {
		if h == o {
			out = append(out, ip)
		}
	}
	return out
}

func loadSets(t *testing.T, ipam string) ([]RangeSet, []refalloc.RangeSet) {
	t.Helper()
	conf := `{"name": "n", "cniVersion": "1.0.0", "ipam": {"type": "host-local", ` + ipam + `}}`
	ref, _, err := refalloc.LoadIPAMConfig([]byte(conf), "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load([]byte(conf), nil)
	if err != nil {
		t.Fatal(err)
	}
	return c.Ranges, ref.Ranges
}

// TestAllocateMatchesReference replays the same random ADD/DEL sequence
// on the reference allocator (over its fake store) and on ours: every
// address handed out, and every exhaustion, must be the same.
func TestAllocateMatchesReference(t *testing.T) {
	for _, ipam := range []string{
		`"subnet": "10.0.0.0/28"`,
		`"subnet": "10.0.0.0/28", "gateway": "10.0.0.7"`,
		`"subnet": "10.0.0.0/28", "rangeStart": "10.0.0.5", "rangeEnd": "10.0.0.9", "gateway": "10.0.0.9"`,
		`"ranges": [[{"subnet": "10.0.0.0/29"}, {"subnet": "10.0.1.0/29", "rangeStart": "10.0.1.3"}, {"subnet": "10.0.2.0/30"}]]`,
		`"ranges": [[{"subnet": "2001:db8::/124"}]]`,
		`"ranges": [[{"subnet": "10.0.0.0/29"}], [{"subnet": "2001:db8::/125", "gateway": "2001:db8::4"}]]`,
	} {
		t.Run(ipam, func(t *testing.T) {
			t.Parallel()
			sets, refSets := loadSets(t, ipam)
			rng := rand.New(rand.NewPCG(1, uint64(len(ipam))))
			ours := newMemPool()
			fake := refstore.NewFakeStore(map[string]string{}, map[string]net.IP{})
			var live []string
			for step := range 400 {
				if len(live) > 0 && rng.IntN(3) == 0 {
					i := rng.IntN(len(live))
					id := live[i]
					live = append(live[:i], live[i+1:]...)
					fake.ReleaseByID(id, "eth0")
					for _, ip := range ours.held(owner{ID: id, IfName: "eth0"}) {
						ours.remove(ip)
					}
					continue
				}
				id := fmt.Sprintf("c%d", step)
				want, wantErr := refAllocate(fake, refSets, id)
				leases, err := allocateIn(ours, sets, owner{ID: id, IfName: "eth0"}, nil, nil)
				got := fmtLeases(leases)
				if (wantErr != nil) != (err != nil) || got != want {
					t.Fatalf("step %d: ours %s (%v), reference %s (%v)", step, got, err, want, wantErr)
				}
				if err != nil {
					if !errors.Is(err, ErrExhausted) || cnierr.CodeOf(err) != cnierr.PoolExhausted {
						t.Fatalf("step %d: exhaustion error %v is not ErrExhausted with code 100", step, err)
					}
					continue
				}
				live = append(live, id)
			}
		})
	}
}

func refAllocate(fake *refstore.FakeStore, sets []refalloc.RangeSet, id string) (string, error) {
	var got []string
	for i := range sets {
		a := refalloc.NewIPAllocator(&sets[i], fake, i)
		ipc, err := a.Get(id, "eth0", nil)
		if err != nil {
			fake.ReleaseByID(id, "eth0")
			return "", err
		}
		got = append(got, ipc.Address.String()+" gw "+ipc.Gateway.String())
	}
	return strings.Join(got, ", "), nil
}

func fmtLeases(ls []lease) string {
	var out []string
	for _, l := range ls {
		out = append(out, netip.PrefixFrom(l.IP, l.Range.Subnet.Bits()).String()+" gw "+l.Range.Gateway.String())
	}
	return strings.Join(out, ", ")
}

func TestAllocateRequested(t *testing.T) {
	sets, _ := loadSets(t, `"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "2001:db8::/64"}]]`)
	p := newMemPool()
	a, b := owner{ID: "a", IfName: "eth0"}, owner{ID: "b", IfName: "eth0"}
	ls, err := allocateIn(p, sets, a, []netip.Addr{netip.MustParseAddr("2001:db8::99"), netip.MustParseAddr("10.0.0.50")}, nil)
	if err != nil || fmtLeases(ls) != "10.0.0.50/24 gw 10.0.0.1, 2001:db8::99/64 gw 2001:db8::1" {
		t.Fatalf("requested = %s, %v", fmtLeases(ls), err)
	}
	if p.last[0] != netip.MustParseAddr("10.0.0.50") {
		t.Errorf("last reserved = %v, want the requested address (round-robin continues from it)", p.last[0])
	}
	for _, tc := range []struct {
		req  []string
		code cnierr.Code
		is   error
		want string
	}{
		{[]string{"10.0.0.50"}, cnierr.InvalidConfig, ErrInUse, `requested IP 10.0.0.50 in range set 0 (10.0.0.1-10.0.0.254) is held by container "a" ifname "eth0"`},
		{[]string{"10.0.0.1"}, cnierr.InvalidConfig, nil, "requested IP 10.0.0.1 is the gateway of 10.0.0.0/24"},
		{[]string{"10.9.0.1"}, cnierr.InvalidConfig, nil, "requested IPs 10.9.0.1 are in none of the ranges"},
		{[]string{"10.0.0.60", "10.0.0.61"}, cnierr.InvalidConfig, nil,
			"requested IP 10.0.0.61 is in range set 0 (10.0.0.1-10.0.0.254), which gives one address and already took requested IP 10.0.0.60"},
		{[]string{"10.0.0.60", "10.0.0.61", "10.9.0.1"}, cnierr.InvalidConfig, nil, "already took requested IP 10.0.0.60\nrequested IPs 10.9.0.1 are in none"},
	} {
		var req []netip.Addr
		for _, s := range tc.req {
			req = append(req, netip.MustParseAddr(s))
		}
		before := len(p.m)
		_, err := allocateIn(p, sets, b, req, nil)
		if err == nil || cnierr.CodeOf(err) != tc.code || !strings.Contains(err.Error(), tc.want) || (tc.is != nil && !errors.Is(err, tc.is)) {
			t.Errorf("request %v: %v (code %d), want code %d with %q", tc.req, err, cnierr.CodeOf(err), tc.code, tc.want)
		}
		if len(p.m) != before {
			t.Errorf("request %v: a failed ADD left %d entries behind", tc.req, len(p.m)-before)
		}
	}
	_, err = allocateIn(p, sets, a, nil, p.held(a))
	if !errors.Is(err, ErrDuplicate) || !strings.Contains(err.Error(), "10.0.0.50") {
		t.Errorf("second ADD of the same attachment = %v, want ErrDuplicate naming 10.0.0.50", err)
	}
}

func TestIterWrapsOnce(t *testing.T) {
	sets, _ := loadSets(t, `"ranges": [[{"subnet": "10.0.0.0/30"}, {"subnet": "10.0.1.0/30", "gateway": "10.0.1.2"}]]`)
	var got []string
	it := newIter(sets[0], netip.MustParseAddr("10.0.0.2"))
	for {
		ip, _, ok := it.next()
		if !ok {
			break
		}
		got = append(got, ip.String())
	}
	// From after the last reserved one, across ranges, gateways skipped, and
	// the last reserved address itself tried last.
	if s := strings.Join(got, " "); s != "10.0.1.1 10.0.0.2" {
		t.Errorf("walk = %s", s)
	}
}
