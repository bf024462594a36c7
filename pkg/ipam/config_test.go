package ipam

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	refalloc "github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/netconf"
)

// The reference host-local's own config loader is the oracle: every case
// runs through both, and they must agree on accepting it and on the
// resulting ranges, requested IPs and routes. departs marks the few
// deliberate differences (where the reference accepts a config that can
// only fail later or hang).
var loadCases = []struct {
	name    string
	conf    string // the netconf; {IPAM} is replaced by the ipam object
	ipam    string
	args    string // CNI_ARGS
	departs string // why we refuse what the reference accepts
}{
	{name: "legacy subnet", ipam: `"subnet": "10.1.2.0/24"`},
	{name: "legacy bounds", ipam: `"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.10", "rangeEnd": "10.1.2.20", "gateway": "10.1.2.254"`},
	{name: "ranges dual-stack", ipam: `"ranges": [[{"subnet": "10.1.0.0/16"}], [{"subnet": "2001:db8:1::/64"}]]`},
	{name: "set of two ranges", ipam: `"ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "10.2.0.0/24", "gateway": "10.2.0.5"}]]`},
	{name: "legacy prepended to ranges", ipam: `"subnet": "10.9.0.0/24", "ranges": [[{"subnet": "2001:db8::/64"}]]`},
	{name: "legacy bounds without subnet ignored", ipam: `"rangeStart": "10.9.0.9", "ranges": [[{"subnet": "10.1.0.0/24"}]]`},
	{name: "ipRanges capability prepended", conf: `"runtimeConfig": {"ipRanges": [[{"subnet": "192.168.7.0/24"}]]}`, ipam: `"ranges": [[{"subnet": "10.1.0.0/24"}]]`},
	{name: "ipRanges capability alone", conf: `"runtimeConfig": {"ipRanges": [[{"subnet": "192.168.7.0/24", "rangeStart": "192.168.7.100"}]]}`},
	{name: "ipv6 defaults", ipam: `"ranges": [[{"subnet": "2001:db8:5::/120"}]]`},
	{name: "ipv4 /30", ipam: `"subnet": "10.3.0.4/30"`},
	{name: "ipv4 /31 too small", ipam: `"subnet": "10.3.0.4/31"`},
	{name: "ipv4 /32 too small", ipam: `"subnet": "10.3.0.4/32"`},
	{name: "ipv6 /126", ipam: `"subnet": "2001:db8::/126"`},
	{name: "ipv6 /127 too small", ipam: `"subnet": "2001:db8::/127"`},
	{name: "host bits set", ipam: `"subnet": "10.1.2.3/24"`},
	{name: "ipv6 host bits set", ipam: `"subnet": "2001:db8::1/64"`},
	{name: "not a cidr", ipam: `"subnet": "10.1.2.0"`},
	{name: "garbage subnet", ipam: `"subnet": "banana"`},
	{name: "range without subnet", ipam: `"ranges": [[{"rangeStart": "10.1.0.5"}]]`},
	{name: "rangeStart outside", ipam: `"subnet": "10.1.2.0/24", "rangeStart": "10.1.3.1"`},
	{name: "rangeEnd outside", ipam: `"subnet": "10.1.2.0/24", "rangeEnd": "10.1.3.1"`},
	{name: "rangeStart not an ip", ipam: `"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.x"`},
	{name: "rangeStart family mismatch", ipam: `"subnet": "10.1.2.0/24", "rangeStart": "2001:db8::1"`},
	{name: "v4-mapped rangeStart", ipam: `"subnet": "10.1.2.0/24", "rangeStart": "::ffff:10.1.2.9"`},
	{name: "gateway outside subnet", ipam: `"subnet": "10.1.2.0/24", "gateway": "10.9.9.1"`,
		departs: "a gateway outside the subnet cannot be reached on the link; the reference fails later, at the route"},
	{name: "rangeStart after rangeEnd", ipam: `"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.50", "rangeEnd": "10.1.2.40"`},
	{name: "rangeEnd the network address", ipam: `"subnet": "10.1.2.0/24", "rangeEnd": "10.1.2.0"`},
	{name: "single-address range", ipam: `"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.9", "rangeEnd": "10.1.2.9"`},
	{name: "overlap within a set", ipam: `"ranges": [[{"subnet": "10.1.0.0/16"}, {"subnet": "10.1.2.0/24"}]]`},
	{name: "overlap between sets", ipam: `"ranges": [[{"subnet": "10.1.0.0/16"}], [{"subnet": "10.1.2.0/24"}]]`},
	{name: "same subnet, disjoint ranges", ipam: `"ranges": [[{"subnet": "10.1.0.0/24", "rangeEnd": "10.1.0.99"}], [{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.100"}]]`},
	{name: "mixed families in a set", ipam: `"ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "2001:db8::/64"}]]`},
	{name: "empty set", ipam: `"ranges": [[]]`},
	{name: "no ranges", ipam: `"routes": []`},
	{name: "two v4 sets need 0.3.0", conf: `"cniVersion": "0.2.0"`, ipam: `"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.2.0.0/24"}]]`},
	{name: "two v4 sets in 0.3.1", conf: `"cniVersion": "0.3.1"`, ipam: `"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.2.0.0/24"}]]`},
	{name: "dual-stack in 0.2.0", conf: `"cniVersion": "0.2.0"`, ipam: `"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "2001:db8::/64"}]]`},
	{name: "requested from every source", args: "IgnoreUnknown=1;IP=10.1.0.7",
		conf: `"args": {"cni": {"ips": ["10.1.0.8", "2001:db8::8"]}}, "runtimeConfig": {"ips": ["10.1.0.9/24"]}`,
		ipam: `"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "2001:db8::/64"}]]`},
	{name: "requested duplicate", conf: `"runtimeConfig": {"ips": ["10.1.0.9", "10.1.0.9"]}`, ipam: `"subnet": "10.1.0.0/24"`},
	{name: "requested garbage", conf: `"runtimeConfig": {"ips": ["10.1.0.x"]}`, ipam: `"subnet": "10.1.0.0/24"`},
	{name: "requested garbage in CNI_ARGS", args: "IP=nope", ipam: `"subnet": "10.1.0.0/24"`},
	{name: "routes", ipam: `"subnet": "10.1.0.0/24", "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.1.0.254"}]`},
	{name: "route with garbage dst", ipam: `"subnet": "10.1.0.0/24", "routes": [{"dst": "nope"}]`},
	{name: "keys in another case", ipam: `"Subnet": "10.1.0.0/24", "RangeStart": "10.1.0.50"`},
	{name: "dataDir and resolvConf", ipam: `"subnet": "10.1.0.0/24", "dataDir": "/run/x", "resolvConf": "/etc/resolv.conf"`},
}

func TestLoadMatchesReference(t *testing.T) {
	for _, tc := range loadCases {
		t.Run(tc.name, func(t *testing.T) {
			conf := `{"name": "net1", "cniVersion": "1.0.0", "ipam": {"type": "host-local"` + prefixComma(tc.ipam) + `}` + prefixComma(tc.conf) + `}`
			if strings.Contains(tc.conf, `"cniVersion"`) {
				conf = strings.Replace(conf, `"cniVersion": "1.0.0", `, "", 1)
			}
			ref, _, refErr := refalloc.LoadIPAMConfig([]byte(conf), tc.args)
			args, err := netconf.ParseCNIArgs(tc.args, CNIArgs...)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Load([]byte(conf), args)
			switch {
			case tc.departs != "":
				if refErr != nil || err == nil {
					t.Fatalf("expected the documented departure (%s): reference err %v, ours %v", tc.departs, refErr, err)
				}
			case (refErr == nil) != (err == nil):
				t.Fatalf("reference err = %v, ours = %v\nconf %s", refErr, err, conf)
			case err == nil:
				compareConfig(t, ref, got)
			}
			if err != nil && cnierr.CodeOf(err) != cnierr.InvalidConfig {
				t.Errorf("error %v has code %d, want 7", err, cnierr.CodeOf(err))
			}
		})
	}
}

func prefixComma(s string) string {
	if s == "" {
		return ""
	}
	return ", " + s
}

func compareConfig(t *testing.T, ref *refalloc.IPAMConfig, got *Config) {
	t.Helper()
	if want := fmtRefRanges(ref.Ranges); want != fmtRanges(got.Ranges) {
		t.Errorf("ranges = %s, reference %s", fmtRanges(got.Ranges), want)
	}
	var want []netip.Addr
	for _, ip := range ref.IPArgs {
		if a := toAddr(ip); !slices.Contains(want, a) {
			want = append(want, a)
		}
	}
	slices.SortFunc(want, netip.Addr.Compare)
	have := slices.SortedFunc(slices.Values(got.Requested), netip.Addr.Compare)
	if !slices.Equal(want, have) {
		t.Errorf("requested = %v, reference %v", have, want)
	}
	if fmt.Sprint(ref.Routes) != fmt.Sprint(got.Routes) {
		t.Errorf("routes = %v, reference %v", got.Routes, ref.Routes)
	}
	if orDefault(ref.DataDir, DefaultDataDir) != got.DataDir || ref.ResolvConf != got.ResolvConf {
		t.Errorf("dataDir, resolvConf = %q, %q; reference %q, %q", got.DataDir, got.ResolvConf, ref.DataDir, ref.ResolvConf)
	}
}

func toAddr(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

func fmtRefRanges(sets []refalloc.RangeSet) string {
	var b strings.Builder
	for _, set := range sets {
		b.WriteString("[")
		for _, r := range set {
			fmt.Fprintf(&b, "{%s %s-%s gw %s}", (*net.IPNet)(&r.Subnet).String(), toAddr(r.RangeStart), toAddr(r.RangeEnd), toAddr(r.Gateway))
		}
		b.WriteString("]")
	}
	return b.String()
}

func fmtRanges(sets []RangeSet) string {
	var b strings.Builder
	for _, set := range sets {
		b.WriteString("[")
		for _, r := range set {
			fmt.Fprintf(&b, "{%s %s-%s gw %s}", r.Subnet, r.Start, r.End, r.Gateway)
		}
		b.WriteString("]")
	}
	return b.String()
}

func TestLoadNoIPAM(t *testing.T) {
	for _, conf := range []string{
		`{"name": "n", "cniVersion": "1.0.0"}`,
		`{"name": "n", "cniVersion": "1.0.0", "ipam": {}}`,
		`{"name": "n", "cniVersion": "1.0.0", "ipam": null}`,
	} {
		c, err := Load([]byte(conf), nil)
		if c != nil || err != nil {
			t.Errorf("Load(%s) = %v, %v; want nil, nil (L2 only)", conf, c, err)
		}
		if c.Builtin() || c.Subnets() != nil || c.Gateways() != nil {
			t.Errorf("nil config is not inert")
		}
	}
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		conf string
		code cnierr.Code
		want string // in the message
	}{
		{`{"name": "n", "ipam": {"subnet": "10.0.0.0/24"}}`, cnierr.InvalidConfig, `"ipam.type": missing`},
		{`{"name": "n", "ipam": {"type": "../x"}}`, cnierr.InvalidConfig, "not a plugin name"},
		{`{"name": "n", "ipam": "host-local"}`, cnierr.InvalidConfig, "ipam"},
		{`{"name": "n", "ipam": {"type": "host-local", "subnet": 7}}`, cnierr.InvalidConfig, "subnet"},
		{`{"name": "n", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24", "gateway": "10.1.0.1"}]]}}`, cnierr.InvalidConfig, `ipam.ranges[0][0].gateway: 10.1.0.1 is not in subnet 10.0.0.0/24`},
		{`{"name": "n", "ipam": {"type": "host-local", "subnet": "10.0.0.0/31"}}`, cnierr.InvalidConfig, `"10.0.0.0/31" is too small`},
		{`{"name": "n", "ipam": {"type": "host-local", "subnet": "10.0.0.1/24"}}`, cnierr.InvalidConfig, `host bits set, expected the network address 10.0.0.0/24`},
		{`{"name": "n", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.0/16"}]]}}`, cnierr.InvalidConfig, `ipam.ranges[1] overlaps ipam.ranges[0]`},
		{`{"name": "../etc", "ipam": {"type": "host-local", "subnet": "10.0.0.0/24"}}`, cnierr.InvalidConfig, `network name`},
		{`{"name": "n", "ipam": {"type": "host-local", "subnet": "10.0.0.0/24"}`, cnierr.DecodeFailure, `decode`},
		{`{"name": "n", "runtimeConfig": {"ips": ["fe80::1%eth0"]}, "ipam": {"type": "host-local", "subnet": "10.0.0.0/24"}}`, cnierr.InvalidConfig, `runtimeConfig.ips[0]: "fe80::1%eth0" is not an IP address`},
	} {
		_, err := Load([]byte(tc.conf), nil)
		if cnierr.CodeOf(err) != tc.code || err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%s) = %v (code %d), want code %d with %q", tc.conf, err, cnierr.CodeOf(err), tc.code, tc.want)
		}
	}
}

func TestSubnetsGateways(t *testing.T) {
	c := mustLoad(t, map[string]any{"cniVersion": "1.0.0", "name": "n", "ipam": map[string]any{"type": "host-local",
		"ranges": []any{
			[]any{map[string]any{"subnet": "10.1.0.0/24"}, map[string]any{"subnet": "10.2.0.0/24", "gateway": "10.2.0.254"}},
			[]any{map[string]any{"subnet": "2001:db8::/64"}},
		}}})
	if got := fmt.Sprint(c.Subnets()); got != "[10.1.0.0/24 10.2.0.0/24 2001:db8::/64]" {
		t.Errorf("Subnets = %s", got)
	}
	if got := fmt.Sprint(c.Gateways()); got != "[10.1.0.1 10.2.0.254 2001:db8::1]" {
		t.Errorf("Gateways = %s", got)
	}
}

// TestResultAddrs: a result's addresses come out unmapped, with their
// prefix lengths, in order.
func TestResultAddrs(t *testing.T) {
	v4, n4, _ := net.ParseCIDR("10.1.0.5/24")
	_, n6, _ := net.ParseCIDR("2001:db8::7/64")
	res := &current.Result{IPs: []*current.IPConfig{
		{Address: net.IPNet{IP: v4.To16(), Mask: n4.Mask}},
		{Address: net.IPNet{IP: net.ParseIP("2001:db8::7"), Mask: n6.Mask}},
	}}
	if got := fmt.Sprint(Prefixes(res)); got != "[10.1.0.5/24 2001:db8::7/64]" {
		t.Errorf("Prefixes = %s", got)
	}
	if got := fmt.Sprint(Addrs(res)); got != "[10.1.0.5 2001:db8::7]" {
		t.Errorf("Addrs = %s", got)
	}
}
