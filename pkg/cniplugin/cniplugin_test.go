package cniplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/netconf"
)

func TestToCNI(t *testing.T) {
	sentinel := cnierr.New(cnierr.PoolExhausted, "address pool exhausted")
	cases := []struct {
		err     error
		code    uint
		msgHas  string
		details bool
	}{
		{errors.New("boom"), 999, "boom", false},
		{fmt.Errorf("allocate 10.0.0.0/30: %w", sentinel), 100, "10.0.0.0/30", false},
		{fmt.Errorf("delegate: %w", &types.Error{Code: 7, Msg: "bad range"}), 7, "bad range", false},
		{errors.Join(fmt.Errorf("step: %w", sentinel), errors.New("rollback: x")), 100, "rollback", false},
		{fmt.Errorf("%s: %w", strings.Repeat("x", 400), sentinel), 100, "address pool exhausted", true},
	}
	for _, tc := range cases {
		got := toCNI(tc.err)
		if got.Code != tc.code || !strings.Contains(got.Msg, tc.msgHas) || (got.Details != "") != tc.details {
			t.Errorf("toCNI(%q) = %+v, want code %d, msg with %q, details %v", tc.err, got, tc.code, tc.msgHas, tc.details)
		}
	}
}

// TestPrevResultOnlyWhereUsed: ADD refuses a prevResult it cannot read
// before its handler runs; CHECK and DEL handlers that do not read it run.
func TestPrevResultOnlyWhereUsed(t *testing.T) {
	bad := `{"cniVersion":"1.0.0","name":"n","type":"t","prevResult":{"cniVersion":"1.0.0","ips":"bogus"}}`
	for _, verb := range []string{"ADD", "CHECK", "DEL"} {
		t.Run(verb, func(t *testing.T) {
			var ran bool
			p := Plugin[struct{}]{Name: "t", AllowHostNS: true, // CNI_NETNS is the test's own namespace
				Add: func(context.Context, *Request[struct{}]) (*current.Result, error) {
					ran = true
					return &current.Result{}, nil
				},
				Check: func(context.Context, *Request[struct{}]) error { ran = true; return nil },
				Del:   func(context.Context, *Request[struct{}]) error { ran = true; return nil }}
			rc, out := runWith(t, p, verb, bad)
			if verb != "ADD" {
				if rc != 0 || !ran {
					t.Fatalf("%s: exit %d, handler ran %v: %s", verb, rc, ran, out)
				}
				return
			}
			var e types.Error
			if rc != 1 || ran || json.Unmarshal(out, &e) != nil || e.Code != uint(cnierr.DecodeFailure) {
				t.Fatalf("%s: exit %d, handler ran %v, output %s; want code 6 before the handler", verb, rc, ran, out)
			}
		})
	}
}

// TestContainerIface: CHECK finds the container's interface in prevResult
// by name and sandbox together, and says why when it cannot (code 7).
func TestContainerIface(t *testing.T) {
	const result = `{"cniVersion":"1.0.0","interfaces":[` +
		`{"name":"br0","mac":"02:00:00:00:00:01"},` +
		`{"name":"eth0","mac":"02:00:00:00:00:02","sandbox":"/run/netns/other"},` +
		`{"name":"eth0","mac":"02:00:00:00:00:03","sandbox":"/run/netns/c1"}]}`
	for _, tc := range []struct {
		name, prev, ifName, netns string
		idx                       int // -1: an error of code 7
	}{
		{"found in its sandbox", result, "eth0", "/run/netns/c1", 2},
		{"the other sandbox's", result, "eth0", "/run/netns/other", 1},
		{"no such sandbox", result, "eth0", "/run/netns/c2", -1},
		{"no such name", result, "eth1", "/run/netns/c1", -1},
		{"a host interface is not it", result, "br0", "", -1},
		{"no prevResult", "", "eth0", "/run/netns/c1", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf := `{"cniVersion":"1.0.0","name":"n","type":"t"`
			if tc.prev != "" {
				conf += `,"prevResult":` + tc.prev
			}
			base, err := netconf.Load([]byte(conf + "}"))
			if err != nil {
				t.Fatal(err)
			}
			r := &Request[struct{}]{Key: netconf.Key{Network: "n", ContainerID: "c", IfName: tc.ifName}, NetNSPath: tc.netns, Base: base}
			prev, idx, iface, err := r.ContainerIface()
			switch {
			case tc.idx < 0 && (err == nil || cnierr.CodeOf(err) != cnierr.InvalidConfig):
				t.Errorf("ContainerIface = %d, %v, want an error of code 7", idx, err)
			case tc.idx >= 0 && (err != nil || idx != tc.idx || prev == nil || iface != prev.Interfaces[tc.idx]):
				t.Errorf("ContainerIface = %d, %+v, %v, want interface %d", idx, iface, err, tc.idx)
			}
		})
	}
}

// TestAddUnreportable: an ADD whose result the config's version cannot
// carry (0.2.0 needs an address) fails with code 1 and is taken back by
// the plugin's DEL; one that converts is not.
func TestAddUnreportable(t *testing.T) {
	for _, tc := range []struct {
		ver     string
		ips     bool
		wantDel bool
	}{{"0.2.0", false, true}, {"", false, true}, {"0.2.0", true, false}, {"1.0.0", false, false}} {
		t.Run(fmt.Sprintf("%q ips=%v", tc.ver, tc.ips), func(t *testing.T) {
			res := &current.Result{CNIVersion: current.ImplementedSpecVersion,
				Interfaces: []*current.Interface{{Name: "eth0", Mac: "02:00:00:00:00:01", Sandbox: "/proc/self/ns/net"}}}
			if tc.ips {
				ip, ipnet, _ := net.ParseCIDR("192.0.2.5/24")
				ipnet.IP = ip
				res.IPs = []*current.IPConfig{{Interface: current.Int(0), Address: *ipnet}}
			}
			var dels []string
			p := Plugin[struct{}]{Name: "t", AllowHostNS: true,
				Add: func(context.Context, *Request[struct{}]) (*current.Result, error) { return res, nil },
				Del: func(_ context.Context, r *Request[struct{}]) error { dels = append(dels, r.Verb); return nil }}
			conf := `{"name":"n","type":"t"}`
			if tc.ver != "" {
				conf = `{"cniVersion":"` + tc.ver + `","name":"n","type":"t"}`
			}
			rc, out := runWith(t, p, "ADD", conf)
			if !tc.wantDel {
				if rc != 0 || len(dels) != 0 {
					t.Fatalf("exit %d, DEL calls %v: %s", rc, dels, out)
				}
				return
			}
			var e types.Error
			if rc != 1 || json.Unmarshal(out, &e) != nil || e.Code != uint(cnierr.IncompatibleVersion) {
				t.Errorf("exit %d, output %s; want code 1", rc, out)
			}
			if len(dels) != 1 || dels[0] != "DEL" {
				t.Errorf("DEL calls %v, want one, as DEL", dels)
			}
		})
	}
}

// runWith runs p for verb with conf on stdin, in the test's own namespace.
func runWith(t *testing.T, p Plugin[struct{}], verb, conf string) (int, []byte) {
	t.Helper()
	for k, v := range map[string]string{"CNI_COMMAND": verb, "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_PATH": "/nonexistent",
		"CNI_NETNS": "/proc/self/ns/net"} {
		t.Setenv(k, v)
	}
	var out bytes.Buffer
	rc := run(p, strings.NewReader(conf), &out, io.Discard)
	return rc, out.Bytes()
}

// TestCheckDiffers: what a CHECK finds without a code of its own is a
// difference (code 7); a coded error keeps its code.
func TestCheckDiffers(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code uint
	}{
		{errors.New(`lo is down`), uint(cnierr.InvalidConfig)},
		{fmt.Errorf("lock: %w", cnierr.New(cnierr.TryAgainLater, "busy")), uint(cnierr.TryAgainLater)},
	} {
		p := Plugin[struct{}]{Name: "t", AllowHostNS: true,
			Check: func(context.Context, *Request[struct{}]) error { return tc.err }}
		rc, out := runWith(t, p, "CHECK", `{"cniVersion":"1.0.0","name":"n","type":"t"}`)
		var e types.Error
		if rc != 1 || json.Unmarshal(out, &e) != nil || e.Code != tc.code || !strings.Contains(e.Msg, tc.err.Error()) {
			t.Errorf("CHECK failing with %q: exit %d, %s; want code %d with the message", tc.err, rc, out, tc.code)
		}
	}
}

// TestLogFileGetsFailures: a config's logFile gets the line saying why a
// call failed, and a panic's.
func TestLogFileGetsFailures(t *testing.T) {
	for _, tc := range []struct {
		add  func(context.Context, *Request[struct{}]) (*current.Result, error)
		want string
	}{
		{func(context.Context, *Request[struct{}]) (*current.Result, error) {
			return nil, errors.New("no bridge xyz0")
		}, "ADD c1: no bridge xyz0"},
		{func(context.Context, *Request[struct{}]) (*current.Result, error) { panic("bad state xyz0") }, "panic: bad state xyz0"},
	} {
		logFile := filepath.Join(t.TempDir(), "plugin.log")
		p := Plugin[struct{}]{Name: "t", AllowHostNS: true, Add: tc.add}
		if rc, out := runWith(t, p, "ADD", `{"cniVersion":"1.0.0","name":"n","type":"t","logFile":"`+logFile+`"}`); rc != 1 {
			t.Fatalf("exit %d: %s", rc, out)
		}
		if b, err := os.ReadFile(logFile); err != nil || !bytes.Contains(b, []byte(tc.want)) {
			t.Errorf("logFile holds %q (%v), want %q", b, err, tc.want)
		}
	}
}
