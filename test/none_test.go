package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/netdrivers/netdrivers/pkg/cniplugin"
	"github.com/netdrivers/netdrivers/pkg/nettest"
)

func noneList(t *testing.T, ver, typ string) *libcni.NetworkConfigList {
	return nettest.ConfList(t, map[string]any{
		"cniVersion": ver, "name": "none-" + nettest.RandHex(6),
		"plugins": []any{map[string]any{"type": typ}},
	})
}

func loUp(t *testing.T, ns *nettest.NS) bool {
	return nettest.Link(t, ns, "lo").Attrs().Flags&net.FlagUp != 0
}

func atLeast(ver, min string) bool {
	order := cniplugin.SupportedVersions
	vi, mi := -1, -1
	for i, v := range order {
		if v == ver {
			vi = i
		}
		if v == min {
			mi = i
		}
	}
	return vi >= mi
}

func TestNoneLifecycle(t *testing.T) {
	nettest.RequireRoot(t)
	for _, ver := range cniplugin.SupportedVersions {
		t.Run(ver, func(t *testing.T) {
			t.Parallel()
			host, cont := nettest.NewNS(t), nettest.NewNS(t)
			nl := cont.NL(t)
			if err := nl.LinkSetDown(nettest.Link(t, cont, "lo")); err != nil {
				t.Fatal(err)
			}
			cni := nettest.NewCNI(t, host)
			list := noneList(t, ver, "none")
			rt := nettest.Runtime(t, cont, "eth0")
			before := nettest.Snapshot(t, host)

			res := cni.MustAdd(t, list, rt)
			if !loUp(t, cont) {
				t.Fatal("lo is down after ADD")
			}
			if got := nettest.LinkNames(t, cont); strings.Join(got, ",") != "lo" {
				t.Fatalf("links after ADD = %v, want only lo", got)
			}
			r, err := current.NewResultFromResult(res)
			if err != nil {
				t.Fatal(err)
			}
			var addrs []string
			for _, ip := range r.IPs {
				addrs = append(addrs, ip.Address.String())
			}
			if strings.Join(addrs, ",") != "127.0.0.1/8,::1/128" {
				t.Errorf("result addresses = %v, want 127.0.0.1/8 and ::1/128", addrs)
			}
			if atLeast(ver, "0.3.0") {
				if len(r.Interfaces) != 1 || r.Interfaces[0].Name != "lo" || r.Interfaces[0].Mac != "00:00:00:00:00:00" || r.Interfaces[0].Sandbox != cont.Path() {
					t.Errorf("result interfaces = %+v, want lo with zero MAC in %s", r.Interfaces, cont.Path())
				}
			}
			if atLeast(ver, "0.4.0") {
				cni.MustCheck(t, list, rt)
			}
			if atLeast(ver, "1.1.0") {
				if err := cni.GetStatusNetworkList(context.Background(), list); err != nil {
					t.Errorf("STATUS: %v", err)
				}
				if err := cni.GCNetworkList(context.Background(), list, &libcni.GCArgs{}); err != nil {
					t.Errorf("GC: %v", err)
				}
			}
			for range 2 {
				cni.MustDel(t, list, rt)
			}
			if !loUp(t, cont) {
				t.Error("none DEL changed the namespace: lo is down")
			}
			rt.NetNS = ""
			cni.MustDel(t, list, rt) // containerd's second DEL
			if after := nettest.Snapshot(t, host); after != before {
				t.Errorf("host changed:\nbefore %s\nafter %s", before, after)
			}
		})
	}
}

func TestNoneCheckRefusesExtraInterface(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	host, cont, other := nettest.NewNS(t), nettest.NewNS(t), nettest.NewNS(t)
	cni := nettest.NewCNI(t, host)
	list := noneList(t, "1.0.0", "none")
	rt := nettest.Runtime(t, cont, "eth0")
	cni.MustAdd(t, list, rt)
	cni.MustCheck(t, list, rt)
	nettest.NewVeth(t, cont, "sneaky0", "", other, "peer0", "")
	err := cni.CheckNetworkList(context.Background(), list, rt)
	if nettest.Code(err) != 7 || !strings.Contains(err.Error(), "sneaky0") {
		t.Fatalf("CHECK with an extra interface = %v, want code 7 naming sneaky0", err)
	}
	// The same namespace as "loopback" only cares that lo is up.
	lb := noneList(t, "1.0.0", "loopback")
	cni.MustAdd(t, lb, rt)
	cni.MustCheck(t, lb, rt)
	cni.MustDel(t, lb, rt)
	if !loUp(t, cont) {
		t.Error("loopback DEL set lo down (the namespace may be shared by joiners)")
	}
	if err := cont.NL(t).LinkSetDown(nettest.Link(t, cont, "lo")); err != nil {
		t.Fatal(err)
	}
	if err := cni.CheckNetworkList(context.Background(), lb, rt); err == nil {
		t.Error("loopback CHECK passed with lo down")
	}
}

// TestLoopbackOnTheNode: containerd runs its loopback network on the pod's
// path concurrently with the pod's network; when hostns has re-bound that
// path onto the node, loopback's ADD, CHECK and DEL succeed and leave the
// node's lo alone. "none" refuses the node for ADD, but its DEL succeeds.
func TestLoopbackOnTheNode(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	host := nettest.NewNS(t)
	cni := nettest.NewCNI(t, host)
	rt := nettest.Runtime(t, host, "lo") // CNI_NETNS is the node itself
	lb := noneList(t, "1.0.0", "loopback")
	before := nettest.Snapshot(t, host)
	cni.MustAdd(t, lb, rt)
	cni.MustCheck(t, lb, rt)
	cni.MustDel(t, lb, rt)
	if !loUp(t, host) || nettest.Snapshot(t, host) != before {
		t.Error("loopback changed the node's namespace")
	}
	none := noneList(t, "1.0.0", "none")
	if _, err := cni.AddNetworkList(context.Background(), none, rt); nettest.Code(err) != 8 {
		t.Errorf("none ADD on the node = %v, want code 8", err)
	}
	cni.MustDel(t, none, rt) // DEL treats the node's namespace as gone
	if !loUp(t, host) || nettest.Snapshot(t, host) != before {
		t.Error("none DEL changed the node's namespace")
	}
}

func TestNonePassesPrevResultOn(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	host, cont := nettest.NewNS(t), nettest.NewNS(t)
	cni := nettest.NewCNI(t, host)
	// A chain whose first plugin reports lo; none, second, must hand the
	// same result on unchanged.
	list := nettest.ConfList(t, map[string]any{
		"cniVersion": "1.0.0", "name": "chain-" + nettest.RandHex(6),
		"plugins": []any{map[string]any{"type": "loopback"}, map[string]any{"type": "none"}},
	})
	rt := nettest.Runtime(t, cont, "eth0")
	cni.MustAdd(t, list, rt)
	calls := cni.Calls()
	if len(calls) != 2 {
		t.Fatalf("calls = %d, want 2", len(calls))
	}
	var first, second any
	json.Unmarshal(calls[0].Stdout, &first)
	json.Unmarshal(calls[1].Stdout, &second)
	if fmt.Sprint(first) != fmt.Sprint(second) {
		t.Errorf("none changed the prevResult:\nin  %s\nout %s", calls[0].Stdout, calls[1].Stdout)
	}
}

// TestNoneBadInput execs the binary directly with broken environments and
// configs: each gets its code, a message naming the problem, and changes
// nothing.
func TestNoneBadInput(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	host, cont := nettest.NewNS(t), nettest.NewNS(t)
	if err := cont.NL(t).LinkSetDown(nettest.Link(t, cont, "lo")); err != nil {
		t.Fatal(err)
	}
	cni := nettest.NewCNI(t, host)
	notNS := t.TempDir() + "/plain"
	os.WriteFile(notNS, nil, 0o644)
	good := `{"cniVersion":"1.0.0","name":"bad","type":"none"}`
	env := func(kv ...string) map[string]string {
		m := map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": cont.Path(),
			"CNI_IFNAME": "eth0", "CNI_PATH": nettest.Bins(t)}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(m, kv[i])
			} else {
				m[kv[i]] = kv[i+1]
			}
		}
		return m
	}
	cases := []struct {
		name, stdin string
		env         map[string]string
		code        uint
		want        string
	}{
		{"malformed JSON", `{"cniVersion":`, env(), 6, "decode config"},
		{"unsupported version", `{"cniVersion":"9.9.9","name":"bad","type":"none"}`, env(), 1, "incompatible"},
		{"no name", `{"cniVersion":"1.0.0","type":"none"}`, env(), 7, "name"},
		{"missing CNI_NETNS", good, env("CNI_NETNS", ""), 4, "CNI_NETNS"},
		{"missing CNI_CONTAINERID", good, env("CNI_CONTAINERID", ""), 4, "CNI_CONTAINERID"},
		{"missing CNI_IFNAME", good, env("CNI_IFNAME", ""), 4, "CNI_IFNAME"},
		{"container ID with slash", good, env("CNI_CONTAINERID", "a/b"), 4, "CNI_CONTAINERID"},
		{"container ID with dotdot", good, env("CNI_CONTAINERID", "a..b"), 4, "CNI_CONTAINERID"},
		{"container ID traversal", good, env("CNI_CONTAINERID", "../../etc"), 4, "CNI_CONTAINERID"},
		{"ifname too long", good, env("CNI_IFNAME", "eth0123456789012"), 4, "CNI_IFNAME"},
		{"ifname with slash", good, env("CNI_IFNAME", "et/h0"), 4, "CNI_IFNAME"},
		{"netns missing", good, env("CNI_NETNS", "/run/netns/does-not-exist-"+nettest.RandHex(6)), 8, "does not exist"},
		{"netns regular file", good, env("CNI_NETNS", notNS), 8, "not a network namespace"},
		{"netns directory", good, env("CNI_NETNS", t.TempDir()), 8, "not a network namespace"},
		{"netns is the host", good, env("CNI_NETNS", "/proc/self/ns/net"), 8, "host"},
		{"netns of another type", good, env("CNI_NETNS", "/proc/self/ns/mnt"), 8, "another type"},
		{"unknown CNI_ARGS", good, env("CNI_ARGS", "FOO=bar"), 4, "FOO"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := nettest.Snapshot(t, cont)
			_, err := cni.Exec(t, "none", []byte(tc.stdin), tc.env)
			if got := nettest.Code(err); got != tc.code {
				t.Fatalf("code = %d (%v), want %d", got, err, tc.code)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			if after := nettest.Snapshot(t, cont); after != before {
				t.Errorf("namespace changed:\n%s\n->\n%s", before, after)
			}
		})
	}
	// IgnoreUnknown makes the same args acceptable.
	if _, err := cni.Exec(t, "none", []byte(good), env("CNI_ARGS", "IgnoreUnknown=1;FOO=bar;K8S_POD_NAME=x")); err != nil {
		t.Fatalf("ADD with IgnoreUnknown: %v", err)
	}
	if l, _ := cont.NL(t).LinkByName("lo"); l.Attrs().Flags&net.FlagUp == 0 {
		t.Error("lo still down after a good ADD")
	}
}
