package netconf

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/utils"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/jsonlite/jsontest"
)

// Fuzz targets for everything this package parses from outside: the
// config's base fields with runtimeConfig and args, CNI_ARGS, the names
// that become paths and device names. Seeds are in testdata/fuzz/<Target>/;
// scripts/fuzz.sh runs each for a few seconds. No input may panic, and
// every refusal must carry a CNI code.

// coded fails t when err has no CNI code of its own.
func coded(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil && cnierr.CodeOf(err) == cnierr.Internal {
		t.Fatalf("%s: error without a CNI code: %v", what, err)
	}
}

func FuzzLoad(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","type":"x","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":8080}],"mac":"02:00:00:00:00:01","ips":["10.0.0.2/24"]}}`), "IgnoreUnknown=1;MAC=02:00:00:00:00:02")
	f.Fuzz(func(t *testing.T, conf []byte, cniArgs string) {
		jsontest.Same(t, conf, func() any { return new(Base) })
		b, err := Load(conf)
		coded(t, "Load", err)
		if err != nil {
			return
		}
		if _, err := b.Prev(); err != nil {
			coded(t, "Prev", err)
		}
		coded(t, "ValidateNetworkName", ValidateNetworkName(b.Name))
		args, err := ParseCNIArgs(cniArgs, "MAC", "IP")
		coded(t, "ParseCNIArgs", err)
		if err == nil {
			mac, err := b.MAC(args)
			coded(t, "MAC", err)
			if err == nil && mac != nil && (len(mac) != 6 || mac[0]&1 == 1) {
				t.Fatalf("MAC accepted %v", mac)
			}
		}
		ports, err := ValidatePorts(b.RuntimeConfig.PortMappings)
		coded(t, "ValidatePorts", err)
		checkPorts(t, ports)
	})
}

// checkPorts asserts what every user of ValidatePorts relies on.
func checkPorts(t *testing.T, ports []Port) {
	t.Helper()
	if len(ports) > MaxPortMappings {
		t.Fatalf("%d port mappings accepted, more than %d", len(ports), MaxPortMappings)
	}
	for i, p := range ports {
		if p.HostPort == 0 || p.ContainerPort == 0 {
			t.Fatalf("port 0 accepted: %v", p)
		}
		if p.Protocol != "tcp" && p.Protocol != "udp" && p.Protocol != "sctp" {
			t.Fatalf("protocol %q accepted", p.Protocol)
		}
		if p.HostIP.IsValid() && (p.HostIP.Zone() != "" || p.HostIP.Is4In6()) {
			t.Fatalf("host IP %v not canonical", p.HostIP)
		}
		for _, q := range ports[:i] {
			if p.Overlaps(q) {
				t.Fatalf("overlapping mappings accepted: %v and %v", p, q)
			}
		}
	}
}

func FuzzParseCNIArgs(f *testing.F) {
	f.Add("IgnoreUnknown=1;K8S_POD_NAME=a;IP=10.0.0.2")
	f.Fuzz(func(t *testing.T, s string) {
		args, err := ParseCNIArgs(s, "IP", "MAC", "TARGET")
		coded(t, "ParseCNIArgs", err)
		if err != nil {
			return
		}
		for k, v := range args {
			if k == "" || strings.Contains(k, ";") || strings.Contains(v, ";") || k == "IgnoreUnknown" {
				t.Fatalf("%q parsed into key %q value %q", s, k, v)
			}
		}
	})
}

// FuzzNames: whatever is accepted as a container ID, network name or
// interface name is safe as one path element and as a device name, and
// nothing the CNI library refuses is accepted.
func FuzzNames(f *testing.F) {
	for _, s := range []string{"abc-123_x.y", "a..b", "-a", "_a", "Z9", "a\u00a0b", "a\u2003", "a\x85", "\xff", "a.b-c_", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// The CNI library's rules, which skel applied before ours ran.
		cniID := cniIDRE.MatchString(s)
		if ours := ValidateContainerID(s) == nil; ours != (cniID && len(s) <= MaxIDLen && !strings.Contains(s, "..")) {
			t.Fatalf("ValidateContainerID(%q) accepts: %v; the CNI regexp matches: %v", s, ours, cniID)
		}
		if ValidateIfName(s) == nil && utils.ValidateInterfaceName(s) != nil {
			t.Fatalf("ValidateIfName(%q) accepts what the CNI library refuses: %v", s, utils.ValidateInterfaceName(s))
		}
		for _, check := range []func(string) error{ValidateContainerID, ValidateNetworkName} {
			err := check(s)
			coded(t, "validate ID", err)
			if err == nil && (s == "" || len(s) > MaxIDLen || filepath.Base(s) != s || strings.Contains(s, "..") ||
				strings.ContainsAny(s, "/\x00 \n") || s[0] == '-' || s[0] == '.') {
				t.Fatalf("unsafe ID accepted: %q", s)
			}
		}
		err := ValidateIfName(s)
		coded(t, "ValidateIfName", err)
		if err == nil && (s == "" || len(s) > 15 || s == "." || s == ".." || strings.ContainsAny(s, "/: \t\n\x00")) {
			t.Fatalf("unsafe ifname accepted: %q", s)
		}
		k := Key{Network: s, ContainerID: s, IfName: s}
		if h := k.Hash(); len(h) != 16 || filepath.Base(h) != h {
			t.Fatalf("hash %q of %q", h, s)
		}
	})
}

// cniIDRE is the CNI library's container ID and network name pattern.
var cniIDRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`)
