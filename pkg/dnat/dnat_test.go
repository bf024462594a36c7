package dnat

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/netconf"
)

var (
	testKey = netconf.Key{Network: "n1", ContainerID: "c1", IfName: "eth0"}
	c4      = netip.MustParseAddr("10.1.0.5")
	c6      = netip.MustParseAddr("fd00::5")
)

func testNet(mode Mode) *Network {
	return &Network{Name: "n1", Bridge: "br1", Mode: mode, Masquerade: true,
		Subnets: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24"), netip.MustParsePrefix("fd00::/64")}}
}

func TestMappings(t *testing.T) {
	tests := []struct {
		name  string
		addrs []netip.Addr
		port  netconf.Port
		want  []string
		err   error
	}{
		{"no hostIP: both families", []netip.Addr{c4, c6}, port("tcp", "", 80, 8080),
			[]string{"ip tcp *:80 -> 10.1.0.5:8080", "ip6 tcp *:80 -> [fd00::5]:8080"}, nil},
		{"no hostIP, v4 only container", []netip.Addr{c4}, port("udp", "", 53, 53), []string{"ip udp *:53 -> 10.1.0.5:53"}, nil},
		{"0.0.0.0 is IPv4 only", []netip.Addr{c4, c6}, port("tcp", "0.0.0.0", 80, 80), []string{"ip tcp *:80 -> 10.1.0.5:80"}, nil},
		{":: is IPv6 only", []netip.Addr{c4, c6}, port("sctp", "::", 80, 80), []string{"ip6 sctp *:80 -> [fd00::5]:80"}, nil},
		{":: with a v4 container is nothing", []netip.Addr{c4}, port("tcp", "::", 80, 80), nil, nil},
		{"specific", []netip.Addr{c4, c6}, port("tcp", "192.0.2.1", 80, 81), []string{"ip tcp 192.0.2.1:80 -> 10.1.0.5:81"}, nil},
		{"localhost v4", []netip.Addr{c4}, port("tcp", "127.0.0.1", 80, 81), []string{"ip tcp 127.0.0.1:80 -> 10.1.0.5:81"}, nil},
		{"::1 refused", []netip.Addr{c4, c6}, port("tcp", "::1", 80, 80), nil, ErrInvalid},
		{"wrong family skipped", []netip.Addr{c4}, port("tcp", "2001:db8::1", 80, 80), nil, nil},
		{"wrong family skipped, v6 only container", []netip.Addr{c6}, port("udp", "192.0.2.1", 53, 53), nil, nil},
		{"no address", nil, port("tcp", "", 80, 80), nil, ErrInvalid},
		{"bad protocol", []netip.Addr{c4}, port("icmp", "", 80, 80), nil, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &Attachment{Key: testKey, Addrs: tt.addrs, Ports: []netconf.Port{tt.port}}
			ms, err := a.mappings(testNet(ModeNAT))
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			var got []string
			for _, m := range ms {
				got = append(got, m.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("mappings = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	bad := []*Network{
		{Name: "", Bridge: "br0"},
		{Name: "n", Bridge: "bridge-name-too-long"},
		{Name: "n", Bridge: "br0", Mode: "bridged"},
		{Name: "n", Bridge: "br0", Subnets: []netip.Prefix{netip.MustParsePrefix("10.1.0.1/24")}},
	}
	for _, n := range bad {
		if err := n.validate(); cnierr.CodeOf(err) != cnierr.InvalidConfig {
			t.Errorf("%+v: err %v, want code 7", n, err)
		}
	}
	a := &Attachment{Key: testKey, Addrs: []netip.Addr{c4}, Ports: []netconf.Port{port("tcp", "", 80, 80)}}
	if _, err := a.mappings(testNet(ModeIsolated)); !errors.Is(err, ErrInvalid) {
		t.Errorf("isolated network with ports: %v, want ErrInvalid", err)
	}
	a.Key.ContainerID = "../etc"
	if _, err := a.mappings(testNet(ModeNAT)); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad container ID: %v, want ErrInvalid", err)
	}
	if _, err := New("pf", nil, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown backend: %v", err)
	}
}

// TestMapElem pins the layout of the published-port maps' keys and
// values: fields padded to 32-bit registers, ports big-endian.
func TestMapElem(t *testing.T) {
	tests := []struct {
		m        mapping
		set      string
		key, val []byte
		text     string
	}{
		{mapping{Proto: "tcp", HostPort: 0x1f90, Cont: c4, ContPort: 80}, mapAny4,
			[]byte{6, 0, 0, 0, 0x1f, 0x90, 0, 0}, []byte{10, 1, 0, 5, 0, 80, 0, 0}, "tcp port 8080 of every IPv4 address"},
		{mapping{Proto: "udp", HostPort: 53, Cont: c6, ContPort: 5353}, mapAny6,
			[]byte{17, 0, 0, 0, 0, 53, 0, 0}, append(c6.AsSlice(), 0x14, 0xe9, 0, 0), "udp port 53 of every IPv6 address"},
		{mapping{Proto: "sctp", HostIP: netip.MustParseAddr("192.0.2.1"), HostPort: 1, Cont: c4, ContPort: 2}, mapAddr4,
			[]byte{192, 0, 2, 1, 132, 0, 0, 0, 0, 1, 0, 0}, []byte{10, 1, 0, 5, 0, 2, 0, 0}, "sctp port 1 of 192.0.2.1"},
	}
	for _, tt := range tests {
		e := mapElem(tt.m)
		if e.Map != tt.set || !slices.Equal(e.Key, tt.key) || !slices.Equal(e.Val, tt.val) {
			t.Errorf("mapElem(%v) = %s %v : %v, want %s %v : %v", tt.m, e.Map, e.Key, e.Val, tt.set, tt.key, tt.val)
		}
		if e.String() != tt.text {
			t.Errorf("%v renders as %q, want %q", tt.m, e, tt.text)
		}
		if back, ok := elemFromKey(e.Map, e.Key, e.Val); !ok || back.Proto != e.Proto || back.Port != e.Port {
			t.Errorf("elemFromKey(%v) = %+v", e.Key, back)
		}
		if got := valString(e.Val); got != netip.AddrPortFrom(tt.m.Cont, tt.m.ContPort).String() {
			t.Errorf("valString = %q", got)
		}
	}
	e := mapElem(mapping{Proto: "tcp", HostIP: netip.MustParseAddr("2001:db8::1"), HostPort: 80, Cont: c6})
	if e.Map != mapAddr6 || len(e.Key) != 24 || len(e.Val) != 20 {
		t.Errorf("dnat6 element %s: key %d bytes, value %d, want 24, 20", e.Map, len(e.Key), len(e.Val))
	}
	for _, s := range globalSets()[:len(pubMaps)] {
		want := map[string][2]uint32{mapAddr4: {12, 8}, mapAddr6: {24, 20}, mapAny4: {8, 8}, mapAny6: {8, 20}}[s.Name]
		if s.KeyType.Bytes != want[0] || s.DataType.Bytes != want[1] || !s.HasTimeout {
			t.Errorf("map %s: key %d bytes, value %d, timeout %v; want %v and flags timeout", s.Name, s.KeyType.Bytes, s.DataType.Bytes, s.HasTimeout, want)
		}
	}
}

// countVerdicts counts rules ending in a verdict or statement of a kind.
func countExpr[T expr.Any](rs []nftRule) int {
	n := 0
	for _, r := range rs {
		if _, ok := r.Exprs[len(r.Exprs)-1].(T); ok {
			n++
		}
	}
	return n
}

func TestNetRules(t *testing.T) {
	tests := []struct {
		mode          Mode
		masq, isolate bool
		drops, masqs  int
	}{
		// raw guard; per subnet hairpin (2) + masquerade (2); localhost masq (1)
		{ModeNAT, true, false, 2, 5},
		{ModeNAT, true, true, 4, 5},
		{ModeNATUnprotected, false, false, 1, 3},
		{ModeRouted, true, false, 1, 3}, // routed never masquerades outbound
		{ModeIsolated, true, true, 4, 0},
	}
	for _, tt := range tests {
		n := testNet(tt.mode)
		n.Masquerade, n.Isolate = tt.masq, tt.isolate
		rs := netRules(n)
		drops := 0
		for _, r := range rs {
			if v, ok := r.Exprs[len(r.Exprs)-1].(*expr.Verdict); ok && v.Kind == expr.VerdictDrop {
				drops++
			}
		}
		if masqs := countExpr[*expr.Masq](rs); drops != tt.drops || masqs != tt.masqs {
			t.Errorf("%s masq=%v isolate=%v: %d drops, %d masquerades; want %d, %d",
				tt.mode, tt.masq, tt.isolate, drops, masqs, tt.drops, tt.masqs)
		}
		for _, r := range rs {
			if !strings.HasPrefix(r.Chain, "n-"+netconf.NetworkHash("n1")) {
				t.Errorf("rule in chain %s, not one of the network's", r.Chain)
			}
		}
	}
}

func TestAttElems(t *testing.T) {
	a := &Attachment{Key: testKey, Addrs: []netip.Addr{c4, c6},
		Ports: []netconf.Port{port("tcp", "", 80, 8080), port("udp", "192.0.2.1", 53, 53), port("tcp", "", 80, 9090)}}
	ms, err := a.mappings(testNet(ModeNAT))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range attElems(ms) {
		got = append(got, e.Map+" "+e.String()+" -> "+valString(e.Val))
	}
	want := []string{ // a host port given twice is published once: the first wins
		"dnat4-any tcp port 80 of every IPv4 address -> 10.1.0.5:8080",
		"dnat6-any tcp port 80 of every IPv6 address -> [fd00::5]:8080",
		"dnat4 udp port 53 of 192.0.2.1 -> 10.1.0.5:53",
	}
	if !slices.Equal(got, want) {
		t.Errorf("elements:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	long := netconf.Key{Network: strings.Repeat("n", 255), ContainerID: strings.Repeat("c", 255), IfName: "eth0"}
	if m := attMarker(long); m.Map != setAtts || len(m.Key) != 16 || m.Key[15] != 0 {
		t.Errorf("marker %s %q (%d bytes), want a NUL-terminated ifname", m.Map, m.Key, len(m.Key))
	}
	msg := elemsMsg(unix.NFT_MSG_NEWSETELEM, 0, long, setAtts, []pubElem{attMarker(long)}, 0)
	if len(msg.Data) > 400 || !strings.Contains(string(msg.Data), "netdrivers "+long.Hash()) {
		t.Errorf("marker message of %d bytes: the comment must be its tag, cut to the kernel's 256-byte user data", len(msg.Data))
	}
}

func TestIptRules(t *testing.T) {
	n := testNet(ModeNAT)
	n.Isolate = true
	text := func(rs []iptRule) string {
		var b strings.Builder
		for _, r := range rs {
			b.WriteString(r.Table + " " + r.Chain + " " + strings.Join(r.Spec, " ") + "\n")
		}
		return b.String()
	}
	v4 := text(iptNetRules(n, true))
	for _, want := range []string{
		"raw NETDRIVERS-RAW -i br1 -d 127.0.0.0/8 -j DROP",
		"filter NETDRIVERS-DROP -o br1 ! -i br1 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",
		"filter NETDRIVERS-DROP -i br1 ! -o br1 -j NETDRIVERS-ISO-OUT",
		"nat NETDRIVERS-POSTROUTING -s 10.1.0.0/24 ! -o br1 ! -d 224.0.0.0/4 -j MASQUERADE",
		"nat NETDRIVERS-POSTROUTING -o br1 -s 127.0.0.0/8 -j MASQUERADE",
	} {
		if !strings.Contains(v4, want) {
			t.Errorf("v4 rules lack %q:\n%s", want, v4)
		}
	}
	if v6 := text(iptNetRules(n, false)); strings.Contains(v6, "127.0.0.0") || !strings.Contains(v6, "fd00::/64") {
		t.Errorf("v6 rules:\n%s", v6)
	}
	ms, _ := (&Attachment{Key: testKey, Addrs: []netip.Addr{c4, c6}, Ports: []netconf.Port{port("tcp", "", 80, 8080)}}).mappings(n)
	chain, jumps := iptAttRules(testKey, ms, false)
	if len(chain) != 1 || !slices.Contains(chain[0].Spec, "[fd00::5]:8080") || jumps[0].Spec[len(jumps[0].Spec)-1] != "NDA-"+testKey.Hash() {
		t.Errorf("v6 attachment rules: %v %v", chain, jumps)
	}
}

func TestSplitRule(t *testing.T) {
	got := splitRule(`-A NETDRIVERS-DNAT -p tcp -m tcp --dport 80 -m comment --comment "netdrivers ab net=n id=c if=eth0" -j NDA-ab`)
	want := []string{"-p", "tcp", "-m", "tcp", "--dport", "80", "-m", "comment", "--comment", "netdrivers ab net=n id=c if=eth0", "-j", "NDA-ab"}
	if !slices.Equal(got, want) {
		t.Errorf("splitRule = %q, want %q", got, want)
	}
}

func port(proto string, host string, hp, cp uint16) netconf.Port {
	p := netconf.Port{Protocol: proto, HostPort: hp, ContainerPort: cp}
	if host != "" {
		p.HostIP = netip.MustParseAddr(host)
	}
	return p
}
