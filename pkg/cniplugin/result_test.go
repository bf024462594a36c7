package cniplugin

import (
	"encoding/json"
	"math/rand/v2"
	"net"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// sameAsReflection fails t unless marshalResult and json.MarshalIndent agree:
// the same bytes, or both an error.
func sameAsReflection(t *testing.T, r *current.Result) {
	t.Helper()
	want, werr := json.MarshalIndent(r, "", "    ")
	got, gerr := marshalResult(r)
	if (werr != nil) != (gerr != nil) {
		t.Fatalf("error %v, encoding/json's %v", gerr, werr)
	}
	if string(got) != string(want) {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

// TestMarshalResult: typical results, every optional field and odd values
// (nil elements, non-canonical masks, bad IP lengths, escapes).
func TestMarshalResult(t *testing.T) {
	one, ten := 1, 10
	_, v6, _ := net.ParseCIDR("2001:db8::5/64")
	cases := map[string]*current.Result{
		"empty":   {},
		"version": {CNIVersion: "1.1.0"},
		"bridge": {CNIVersion: "1.0.0",
			Interfaces: []*current.Interface{{Name: "nd-1", Mac: "aa:bb:cc:dd:ee:ff"}, {Name: "veth1"}, {Name: "eth0", Mac: "02:00:00:00:00:01", Sandbox: "/run/netns/x"}},
			IPs: []*current.IPConfig{{Interface: &one, Address: net.IPNet{IP: net.IPv4(192, 0, 2, 5).To4(), Mask: net.CIDRMask(24, 32)}, Gateway: net.IPv4(192, 0, 2, 1)},
				{Address: net.IPNet{IP: v6.IP, Mask: v6.Mask}}},
			Routes: []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: net.IPv4(192, 0, 2, 1)},
				{Dst: *v6, MTU: 1400, AdvMSS: 1360, Priority: 5, Table: &ten, Scope: &one}},
			DNS: types.DNS{Nameservers: []string{"192.0.2.53"}, Domain: "example.org", Search: []string{"a", "b"}, Options: []string{"ndots:5"}}},
		"all interface fields": {Interfaces: []*current.Interface{{Name: "x", Mac: "m", Mtu: 9000, Sandbox: "s", SocketPath: "/p", PciID: "0000:00:01.0"}}},
		"nil elements":         {Interfaces: []*current.Interface{nil}, IPs: []*current.IPConfig{nil}, Routes: []*types.Route{nil}},
		"empty lists":          {Interfaces: []*current.Interface{}, IPs: []*current.IPConfig{}, DNS: types.DNS{Search: []string{}}},
		"odd mask":             {IPs: []*current.IPConfig{{Address: net.IPNet{IP: net.IPv4(10, 0, 0, 1).To4(), Mask: net.IPv4Mask(255, 0, 255, 0)}}}},
		"v4 in v6 form":        {IPs: []*current.IPConfig{{Address: net.IPNet{IP: net.IPv4(10, 0, 0, 1), Mask: net.CIDRMask(120, 128)}}}},
		"no address":           {IPs: []*current.IPConfig{{}}, Routes: []*types.Route{{}}},
		"bad gateway":          {IPs: []*current.IPConfig{{Gateway: net.IP{1, 2, 3}}}},
		"bad route gw":         {Routes: []*types.Route{{GW: net.IP{1}}}},
		"escapes":              {CNIVersion: "\x00\x1f\"\\<>&\b\f\n\r\t\u2028\u2029é\xff\xfe", Interfaces: []*current.Interface{{Name: "a\u2029b\x80"}}},
		"huge":                 {Interfaces: []*current.Interface{{Name: "h", Mtu: 1<<62 + 1}}, Routes: []*types.Route{{Priority: -(1<<55 + 3), MTU: 1e18 + 7}}},
		"negative":             {Interfaces: []*current.Interface{{Name: "n", Mtu: -1}}, Routes: []*types.Route{{MTU: -5, Table: new(int)}}},
	}
	for name, r := range cases {
		t.Run(name, func(t *testing.T) { sameAsReflection(t, r) })
	}
}

// TestMarshalResultRandom compares 2,000 random results.
func TestMarshalResultRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	str := func() string {
		const alphabet = "ab09:/._-\"\\<>&\n\x01\xc3\xa9\xe2\x80\xa8\xff"
		b := make([]byte, rng.IntN(8))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return string(b)
	}
	ip := func() net.IP {
		switch rng.IntN(5) {
		case 0:
			return nil
		case 1:
			return net.IPv4(byte(rng.IntN(256)), 0, 2, byte(rng.IntN(256))).To4()
		case 2:
			return net.IPv4(198, 51, 100, byte(rng.IntN(256)))
		case 3:
			ip := make(net.IP, 16)
			ip[0], ip[1], ip[15] = 0x20, 0x01, byte(rng.IntN(256))
			return ip
		}
		return make(net.IP, rng.IntN(20)) // mostly invalid lengths
	}
	ipnet := func() net.IPNet {
		a := ip()
		bits := 32
		if len(a) == 16 && rng.IntN(2) == 0 {
			bits = 128
		}
		return net.IPNet{IP: a, Mask: net.CIDRMask(rng.IntN(bits+1), bits)}
	}
	intp := func() *int {
		if rng.IntN(2) == 0 {
			return nil
		}
		v := rng.IntN(300) - 10
		return &v
	}
	strs := func() []string {
		if rng.IntN(3) == 0 {
			return nil
		}
		out := make([]string, rng.IntN(3))
		for i := range out {
			out[i] = str()
		}
		return out
	}
	for i := 0; i < 2000; i++ {
		r := &current.Result{CNIVersion: str(), DNS: types.DNS{Nameservers: strs(), Domain: str(), Search: strs(), Options: strs()}}
		for range rng.IntN(4) {
			r.Interfaces = append(r.Interfaces, &current.Interface{Name: str(), Mac: str(), Mtu: rng.IntN(3) * 1500, Sandbox: str(), SocketPath: str(), PciID: str()})
		}
		for range rng.IntN(3) {
			r.IPs = append(r.IPs, &current.IPConfig{Interface: intp(), Address: ipnet(), Gateway: ip()})
		}
		for range rng.IntN(3) {
			r.Routes = append(r.Routes, &types.Route{Dst: ipnet(), GW: ip(), MTU: rng.IntN(2) * 1400, AdvMSS: rng.IntN(2), Priority: rng.IntN(2) * 7, Table: intp(), Scope: intp()})
		}
		sameAsReflection(t, r)
	}
}

// FuzzMarshalResult compares the two encoders on fuzzed strings and bytes.
func FuzzMarshalResult(f *testing.F) {
	f.Add("1.0.0", "eth0", "/run/netns/a", []byte{192, 0, 2, 1}, []byte{255, 255, 255, 0}, 1500)
	f.Add("\u2028<", "\xff", "", []byte{1, 2, 3}, []byte{}, -1)
	f.Fuzz(func(t *testing.T, ver, name, sandbox string, ip, mask []byte, n int) {
		r := &current.Result{CNIVersion: ver,
			Interfaces: []*current.Interface{{Name: name, Sandbox: sandbox, Mtu: n}},
			IPs:        []*current.IPConfig{{Interface: &n, Address: net.IPNet{IP: ip, Mask: mask}, Gateway: ip}},
			Routes:     []*types.Route{{Dst: net.IPNet{IP: ip, Mask: mask}, GW: ip, Priority: n}},
			DNS:        types.DNS{Domain: name, Search: []string{sandbox}}}
		sameAsReflection(t, r)
	})
}
