package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/netconf"
)

func loadJSON(t *testing.T, conf map[string]any, cniArgs string) (*Conf, error) {
	t.Helper()
	full := map[string]any{"cniVersion": "1.0.0", "name": "n", "type": "macvlan", "master": "eth9"}
	for k, v := range conf {
		if v == nil {
			delete(full, k)
		} else {
			full[k] = v
		}
	}
	stdin, err := json.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	base, err := netconf.Load(stdin)
	if err != nil {
		return nil, err
	}
	args, err := netconf.ParseCNIArgs(cniArgs, "MAC", "IP")
	if err != nil {
		return nil, err
	}
	return load(&cniplugin.Request[*Conf]{Stdin: stdin, Base: base, Args: args})
}

var hostLocal = map[string]any{"type": "host-local", "subnet": "192.0.2.0/24", "rangeStart": "192.0.2.10", "rangeEnd": "192.0.2.99"}

func TestLoadAccepts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		conf    map[string]any
		args    string
		mode    netlink.MacvlanMode
		mac     string
		ipam    bool
		shimIPs string
	}{
		{"defaults, no ipam", nil, "", netlink.MACVLAN_MODE_BRIDGE, "", false, ""},
		{"ipam {}", map[string]any{"ipam": map[string]any{}}, "", netlink.MACVLAN_MODE_BRIDGE, "", false, ""},
		{"ipam without type is L2, as the reference", map[string]any{"ipam": map[string]any{"subnet": "10.0.0.0/24"}}, "", netlink.MACVLAN_MODE_BRIDGE, "", false, ""},
		{"ipam key case, as encoding/json", map[string]any{"ipam": map[string]any{"Type": "host-local", "Subnet": "192.0.2.0/24"}},
			"", netlink.MACVLAN_MODE_BRIDGE, "", true, ""},
		{"no master", map[string]any{"master": nil, "ipam": hostLocal}, "", netlink.MACVLAN_MODE_BRIDGE, "", true, ""},
		{"each mode", map[string]any{"mode": "private"}, "", netlink.MACVLAN_MODE_PRIVATE, "", false, ""},
		{"vepa", map[string]any{"mode": "vepa"}, "", netlink.MACVLAN_MODE_VEPA, "", false, ""},
		{"passthru ignores a mac", map[string]any{"mode": "passthru", "mac": "02:00:00:00:00:01"}, "", netlink.MACVLAN_MODE_PASSTHRU, "", false, ""},
		{"config mac", map[string]any{"mac": "02:00:00:00:00:01"}, "", netlink.MACVLAN_MODE_BRIDGE, "02:00:00:00:00:01", false, ""},
		{"CNI_ARGS MAC over config", map[string]any{"mac": "02:00:00:00:00:01"}, "MAC=02:00:00:00:00:02", netlink.MACVLAN_MODE_BRIDGE, "02:00:00:00:00:02", false, ""},
		{"args.cni.mac over CNI_ARGS", map[string]any{"mac": "02:00:00:00:00:01", "args": map[string]any{"cni": map[string]any{"mac": "02:00:00:00:00:03"}}},
			"MAC=02:00:00:00:00:02", netlink.MACVLAN_MODE_BRIDGE, "02:00:00:00:00:03", false, ""},
		{"runtimeConfig.mac over all", map[string]any{"mac": "02:00:00:00:00:01", "args": map[string]any{"cni": map[string]any{"mac": "02:00:00:00:00:03"}},
			"runtimeConfig": map[string]any{"mac": "02:00:00:00:00:04"}}, "MAC=02:00:00:00:00:02", netlink.MACVLAN_MODE_BRIDGE, "02:00:00:00:00:04", false, ""},
		{"shim from the pool", map[string]any{"hostShim": true, "ipam": hostLocal}, "", netlink.MACVLAN_MODE_BRIDGE, "", true, ""},
		{"shim address outside the pool", map[string]any{"hostShim": true, "hostShimIP": "192.0.2.200/24", "ipam": hostLocal}, "", netlink.MACVLAN_MODE_BRIDGE, "", true, "192.0.2.200"},
		{"shim addresses of both families", map[string]any{"hostShim": true, "hostShimIP": []string{"192.0.2.200", "2001:db8::5"},
			"ipam": map[string]any{"type": "static"}}, "", netlink.MACVLAN_MODE_BRIDGE, "", true, "192.0.2.200,2001:db8::5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := loadJSON(t, tc.conf, tc.args)
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			if c.mode != tc.mode || c.mac.String() != tc.mac || (c.ipam != nil) != tc.ipam {
				t.Errorf("mode %d mac %q ipam %v, want %d %q %v", c.mode, c.mac, c.ipam != nil, tc.mode, tc.mac, tc.ipam)
			}
			var shims []string
			for _, a := range c.shimIPs {
				shims = append(shims, a.String())
			}
			if got := strings.Join(shims, ","); got != tc.shimIPs {
				t.Errorf("shim addresses %q, want %q", got, tc.shimIPs)
			}
		})
	}
}

func TestLoadRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		conf map[string]any
		code cnierr.Code
		want string
	}{
		{"mode", map[string]any{"mode": "passthrough"}, cnierr.InvalidConfig, `"passthrough"`},
		{"master with slash", map[string]any{"master": "a/b"}, cnierr.InvalidConfig, `"master"`},
		{"master too long", map[string]any{"master": "abcdefghijklmnop"}, cnierr.InvalidConfig, `"master"`},
		{"negative mtu", map[string]any{"mtu": -5}, cnierr.InvalidConfig, "-5"},
		{"mtu below the kernel's minimum", map[string]any{"mtu": 50}, cnierr.InvalidConfig, "68 up to the master's MTU"},
		{"mtu string", map[string]any{"mtu": "9000"}, cnierr.InvalidConfig, "mtu"},
		{"bcqueuelen negative", map[string]any{"bcqueuelen": -1}, cnierr.InvalidConfig, "bcqueuelen"},
		{"zero mac", map[string]any{"mac": "00:00:00:00:00:00"}, cnierr.InvalidConfig, "zero"},
		{"shim, private", map[string]any{"hostShim": true, "mode": "private", "ipam": hostLocal}, cnierr.InvalidConfig, "bridge"},
		{"shim, no ipam", map[string]any{"hostShim": true}, cnierr.InvalidConfig, "ipam"},
		{"shim, delegated, no address", map[string]any{"hostShim": true, "ipam": map[string]any{"type": "dhcp"}}, cnierr.InvalidConfig, "hostShimIP"},
		{"shim address in the pool", map[string]any{"hostShim": true, "hostShimIP": "192.0.2.50", "ipam": hostLocal}, cnierr.InvalidConfig, "192.0.2.10-192.0.2.99"},
		{"shim address loopback", map[string]any{"hostShim": true, "hostShimIP": "127.0.0.1", "ipam": hostLocal}, cnierr.InvalidConfig, "127.0.0.1"},
		{"shim address of a wrong type", map[string]any{"hostShim": true, "hostShimIP": 5, "ipam": hostLocal}, cnierr.InvalidConfig, "hostShimIP"},
		{"shim address without shim", map[string]any{"hostShimIP": "192.0.2.200"}, cnierr.InvalidConfig, "hostShim"},
		{"bad ipam", map[string]any{"ipam": map[string]any{"type": "host-local", "subnet": "nope"}}, cnierr.InvalidConfig, "nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadJSON(t, tc.conf, "")
			if err == nil {
				t.Fatal("accepted")
			}
			if got := cnierr.CodeOf(err); got != tc.code || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("code %d %q, want %d naming %q", got, err, tc.code, tc.want)
			}
		})
	}
}
