package netconf

import (
	"strings"
	"testing"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
)

func TestParseCNIArgs(t *testing.T) {
	cases := []struct {
		in    string
		known []string
		want  map[string]string
		code  cnierr.Code
	}{
		{in: "", want: map[string]string{}},
		{in: "IP=10.1.2.3", known: []string{"IP"}, want: map[string]string{"IP": "10.1.2.3"}},
		{in: "K8S_POD_NAME=a;K8S_POD_NAMESPACE=b", want: map[string]string{"K8S_POD_NAME": "a", "K8S_POD_NAMESPACE": "b"}},
		{in: "IgnoreUnknown=1;FOO=bar", want: map[string]string{"FOO": "bar"}},
		{in: "FOO=bar;IgnoreUnknown=true", want: map[string]string{"FOO": "bar"}},
		{in: "FOO=bar", code: cnierr.InvalidEnv},
		{in: "IgnoreUnknown=0;FOO=bar", code: cnierr.InvalidEnv},
		{in: "IgnoreUnknown=maybe", code: cnierr.InvalidEnv},
		{in: "novalue", code: cnierr.InvalidEnv},
		{in: "=x", code: cnierr.InvalidEnv},
		{in: "IP=a=b", known: []string{"IP"}, want: map[string]string{"IP": "a=b"}},
		{in: ";;IP=1;", known: []string{"IP"}, want: map[string]string{"IP": "1"}},
	}
	for _, tc := range cases {
		got, err := ParseCNIArgs(tc.in, tc.known...)
		if tc.code != 0 {
			if cnierr.CodeOf(err) != tc.code {
				t.Errorf("ParseCNIArgs(%q) err = %v, want code %d", tc.in, err, tc.code)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseCNIArgs(%q): %v", tc.in, err)
			continue
		}
		if len(got) != len(tc.want) {
			t.Errorf("ParseCNIArgs(%q) = %v, want %v", tc.in, got, tc.want)
		}
		for k, v := range tc.want {
			if got[k] != v {
				t.Errorf("ParseCNIArgs(%q)[%s] = %q, want %q", tc.in, k, got[k], v)
			}
		}
	}
}

func TestValidatePorts(t *testing.T) {
	ok := []PortMapping{
		{HostPort: 8080, ContainerPort: 80},
		{HostPort: 8080, ContainerPort: 80, Protocol: "UDP"},
		{HostPort: 8443, ContainerPort: 443, Protocol: "sctp", HostIP: "127.0.0.1"},
		{HostPort: 9000, ContainerPort: 90, HostIP: "0.0.0.0"},
		{HostPort: 9000, ContainerPort: 90, HostIP: "2001:db8::1"},
	}
	ports, err := ValidatePorts(ok)
	if err != nil {
		t.Fatal(err)
	}
	if ports[0].Protocol != "tcp" || ports[1].Protocol != "udp" || !ports[0].Wildcard() || ports[2].Wildcard() {
		t.Errorf("normalised ports = %+v", ports)
	}
	bad := []struct {
		m    []PortMapping
		want string
	}{
		{[]PortMapping{{HostPort: 0, ContainerPort: 80}}, "hostPort"},
		{[]PortMapping{{HostPort: 70000, ContainerPort: 80}}, "hostPort"},
		{[]PortMapping{{HostPort: 80, ContainerPort: -1}}, "containerPort"},
		{[]PortMapping{{HostPort: 80, ContainerPort: 80, Protocol: "icmp"}}, "protocol"},
		{[]PortMapping{{HostPort: 80, ContainerPort: 80, HostIP: "nope"}}, "hostIP"},
		{[]PortMapping{{HostPort: 80, ContainerPort: 80, HostIP: "fe80::1%eth0"}}, "hostIP"},
		{[]PortMapping{{HostPort: 80, ContainerPort: 80}, {HostPort: 80, ContainerPort: 81, HostIP: "10.0.0.1"}}, "overlaps"},
		{make([]PortMapping, MaxPortMappings+1), "more than"},
	}
	for _, tc := range bad {
		_, err := ValidatePorts(tc.m)
		if cnierr.CodeOf(err) != cnierr.InvalidConfig || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ValidatePorts(%v) = %v, want code 7 mentioning %q", tc.m[:min(2, len(tc.m))], err, tc.want)
		}
	}
}

func TestPortOverlaps(t *testing.T) {
	p := func(ip string, port int, proto string) Port {
		ps, err := ValidatePorts([]PortMapping{{HostPort: port, ContainerPort: 1, Protocol: proto, HostIP: ip}})
		if err != nil {
			t.Fatal(err)
		}
		return ps[0]
	}
	cases := []struct {
		a, b Port
		want bool
	}{
		{p("", 80, "tcp"), p("", 80, "tcp"), true},
		{p("", 80, "tcp"), p("", 80, "udp"), false},
		{p("", 80, "tcp"), p("", 81, "tcp"), false},
		{p("", 80, "tcp"), p("10.0.0.1", 80, "tcp"), true},
		{p("0.0.0.0", 80, "tcp"), p("10.0.0.1", 80, "tcp"), true},
		{p("0.0.0.0", 80, "tcp"), p("2001:db8::1", 80, "tcp"), false},
		{p("::", 80, "tcp"), p("2001:db8::1", 80, "tcp"), true},
		{p("10.0.0.1", 80, "tcp"), p("10.0.0.2", 80, "tcp"), false},
		{p("10.0.0.1", 80, "tcp"), p("10.0.0.1", 80, "tcp"), true},
	}
	for _, tc := range cases {
		if got := tc.a.Overlaps(tc.b); got != tc.want {
			t.Errorf("%s overlaps %s = %v, want %v", tc.a, tc.b, got, tc.want)
		}
		if got := tc.b.Overlaps(tc.a); got != tc.want {
			t.Errorf("%s overlaps %s = %v, want %v (symmetry)", tc.b, tc.a, got, tc.want)
		}
	}
}

func TestValidateNames(t *testing.T) {
	for _, id := range []string{"abc", "a-b_c.d", strings.Repeat("a", 255), "cnitool-0123456789abcdef0123"} {
		if err := ValidateContainerID(id); err != nil {
			t.Errorf("ValidateContainerID(%q) = %v", id, err)
		}
	}
	for _, id := range []string{"", "a/b", "..", "a..b", "-a", ".a", "a b", "a\x00b", strings.Repeat("a", 256), "ä"} {
		if err := ValidateContainerID(id); cnierr.CodeOf(err) != cnierr.InvalidEnv {
			t.Errorf("ValidateContainerID(%q) = %v, want code 4", id, err)
		}
	}
	for _, n := range []string{"eth0", "a", "net1.100", strings.Repeat("x", 15)} {
		if err := ValidateIfName(n); err != nil {
			t.Errorf("ValidateIfName(%q) = %v", n, err)
		}
	}
	for _, n := range []string{"", ".", "..", "a/b", "a:b", "a b", "a\tb", strings.Repeat("x", 16), "a\x00"} {
		if err := ValidateIfName(n); cnierr.CodeOf(err) != cnierr.InvalidEnv {
			t.Errorf("ValidateIfName(%q) = %v, want code 4", n, err)
		}
	}
}

func TestMACPrecedence(t *testing.T) {
	b, err := Load([]byte(`{"cniVersion":"1.0.0","name":"n","args":{"cni":{"mac":"02:00:00:00:00:02"}},"runtimeConfig":{"mac":"02:00:00:00:00:03"}}`))
	if err != nil {
		t.Fatal(err)
	}
	env := CNIArgs{"MAC": "02:00:00:00:00:01"}
	if m, _ := b.MAC(env); m.String() != "02:00:00:00:00:03" {
		t.Errorf("runtimeConfig should win, got %s", m)
	}
	b.RuntimeConfig.MAC = ""
	if m, _ := b.MAC(env); m.String() != "02:00:00:00:00:02" {
		t.Errorf("args.cni should beat CNI_ARGS, got %s", m)
	}
	b.Args = nil
	if m, _ := b.MAC(env); m.String() != "02:00:00:00:00:01" {
		t.Errorf("CNI_ARGS MAC ignored, got %s", m)
	}
	for _, bad := range []string{"01:00:5e:00:00:01", "00:00:00:00:00:00", "zz", "02:00:00:00:00:00:00:01"} {
		if _, err := ParseMAC(bad); cnierr.CodeOf(err) != cnierr.InvalidConfig {
			t.Errorf("ParseMAC(%q) = %v, want code 7", bad, err)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	var v struct {
		MTU int `json:"mtu"`
	}
	if err := Decode([]byte(`{"mtu":"big"}`), &v); cnierr.CodeOf(err) != cnierr.InvalidConfig || !strings.Contains(err.Error(), "mtu") {
		t.Errorf("type error = %v, want code 7 naming mtu", err)
	}
	if err := Decode([]byte(`{"mtu":`), &v); cnierr.CodeOf(err) != cnierr.DecodeFailure {
		t.Errorf("syntax error = %v, want code 6", err)
	}
	if err := Decode(make([]byte, MaxConfigSize+1), &v); cnierr.CodeOf(err) != cnierr.DecodeFailure {
		t.Errorf("oversized config = %v, want code 6", err)
	}
	k := Key{Network: "n", ContainerID: "c", IfName: "eth0"}
	if len(k.Hash()) != 16 || k.Hash() == (Key{Network: "n", ContainerID: "c", IfName: "eth1"}).Hash() {
		t.Errorf("Key.Hash() = %q", k.Hash())
	}
}
