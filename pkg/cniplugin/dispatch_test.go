package cniplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// TestDispatchAgreesWithSkel runs each call through run and through skel,
// which plugins used before: the same calls reach the handler, and the
// same ones fail with the same code. wantOurs marks where we refuse on
// purpose what skel let through.
func TestDispatchAgreesWithSkel(t *testing.T) {
	conf := func(v string) string {
		if v == "-" {
			return `{"name":"n","type":"t"}`
		}
		return `{"cniVersion":"` + v + `","name":"n","type":"t"}`
	}
	for _, tc := range []struct {
		name     string
		env      []string // overrides of a valid ADD; "" unsets
		stdin    string
		wantOurs uint // 0: as skel
	}{
		{name: "add", stdin: conf("1.0.0")},
		{name: "add 1.1.0", stdin: conf("1.1.0")},
		{name: "add 0.3.1", stdin: conf("0.3.1")},
		{name: "add without cniVersion", stdin: conf("-")},
		{name: "add 0.5.0", stdin: conf("0.5.0")},
		{name: "add 1.2.0", stdin: conf("1.2.0")},
		{name: "add version abc", stdin: conf("abc")},
		{name: "check 0.3.1", env: []string{"CNI_COMMAND", "CHECK"}, stdin: conf("0.3.1")},
		{name: "check 0.4.0", env: []string{"CNI_COMMAND", "CHECK"}, stdin: conf("0.4.0")},
		{name: "check version abc", env: []string{"CNI_COMMAND", "CHECK"}, stdin: conf("abc")},
		{name: "check 1.2.0", env: []string{"CNI_COMMAND", "CHECK"}, stdin: conf("1.2.0")},
		{name: "del 0.2.0", env: []string{"CNI_COMMAND", "DEL"}, stdin: conf("0.2.0")},
		{name: "del without netns", env: []string{"CNI_COMMAND", "DEL", "CNI_NETNS", ""}, stdin: conf("1.0.0")},
		{name: "del without ifname", env: []string{"CNI_COMMAND", "DEL", "CNI_IFNAME", ""}, stdin: conf("1.0.0")},
		{name: "del without path", env: []string{"CNI_COMMAND", "DEL", "CNI_PATH", ""}, stdin: conf("1.0.0")},
		{name: "gc 1.0.0", env: []string{"CNI_COMMAND", "GC"}, stdin: conf("1.0.0")},
		{name: "gc 1.1.0", env: []string{"CNI_COMMAND", "GC", "CNI_CONTAINERID", "", "CNI_IFNAME", ""}, stdin: conf("1.1.0")},
		{name: "gc without path", env: []string{"CNI_COMMAND", "GC", "CNI_PATH", ""}, stdin: conf("1.1.0")},
		{name: "status 1.0.0", env: []string{"CNI_COMMAND", "STATUS"}, stdin: conf("1.0.0")},
		{name: "status 1.1.0", env: []string{"CNI_COMMAND", "STATUS", "CNI_NETNS", ""}, stdin: conf("1.1.0")},
		{name: "add without netns", env: []string{"CNI_NETNS", ""}, stdin: conf("1.0.0")},
		{name: "add without container id", env: []string{"CNI_CONTAINERID", ""}, stdin: conf("1.0.0")},
		{name: "add without path", env: []string{"CNI_PATH", ""}, stdin: conf("1.0.0")},
		{name: "container id with a space", env: []string{"CNI_CONTAINERID", "a b"}, stdin: conf("1.0.0")},
		{name: "container id with ..", env: []string{"CNI_CONTAINERID", "a..b"}, stdin: conf("1.0.0"), wantOurs: 4},
		{name: "ifname with /", env: []string{"CNI_IFNAME", "a/b"}, stdin: conf("1.0.0")},
		{name: "ifname with a no-break space", env: []string{"CNI_IFNAME", "a\u00a0b"}, stdin: conf("1.0.0")},
		{name: "ifname too long", env: []string{"CNI_IFNAME", "abcdefghijklmnop"}, stdin: conf("1.0.0")},
		{name: "ifname with a tab", env: []string{"CNI_IFNAME", "a\tb"}, stdin: conf("1.0.0")},
		{name: "ifname with a control character", env: []string{"CNI_IFNAME", "a\x01b"}, stdin: conf("1.0.0"), wantOurs: 4},
		{name: "bad json", stdin: `{"cniVersion":`},
		{name: "empty stdin", stdin: ""},
		{name: "no name", stdin: `{"cniVersion":"1.0.0","type":"t"}`},
		{name: "bad name", stdin: `{"cniVersion":"1.0.0","name":"a b","type":"t"}`},
		{name: "name with ..", stdin: `{"cniVersion":"1.0.0","name":"a..b","type":"t"}`, wantOurs: 7},
		{name: "unknown command", env: []string{"CNI_COMMAND", "FOO"}, stdin: conf("1.0.0")},
		{name: "config over 4 MiB", stdin: `{"cniVersion":"1.0.0","name":"n","type":"t","x":"` + strings.Repeat("x", 4<<20) + `"}`, wantOurs: 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setEnv(t, tc.env)
			calledOurs, code := runOurs(t, tc.stdin)
			setEnv(t, tc.env)
			calledSkel, skelCode := runSkel(t, tc.stdin)
			want := skelCode
			if tc.wantOurs != 0 {
				want = tc.wantOurs
				if skelCode != 0 || !calledSkel {
					t.Errorf("skel refuses it too (code %d): drop wantOurs", skelCode)
				}
			}
			if code != want || calledOurs != (want == 0) || calledSkel != (skelCode == 0) {
				t.Errorf("ours: code %d, handler called %v; skel: code %d, handler called %v; want code %d", code, calledOurs, skelCode, calledSkel, want)
			}
		})
	}
}

// TestVersionAndAboutAsSkel: VERSION prints skel's document, and a run
// without CNI_COMMAND says what the binary is, on stderr only.
func TestVersionAndAboutAsSkel(t *testing.T) {
	var want bytes.Buffer
	if err := version.All.Encode(&want); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CNI_COMMAND", "VERSION")
	var out bytes.Buffer
	if rc := run(Plugin[struct{}]{Name: "t"}, strings.NewReader(""), &out, io.Discard); rc != 0 || out.String() != want.String() {
		t.Errorf("VERSION: exit %d, %q; want %q", rc, out.String(), want.String())
	}
	var info struct {
		SupportedVersions []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal(out.Bytes(), &info); err != nil || !strings.Contains(strings.Join(info.SupportedVersions, " "), "1.1.0") {
		t.Errorf("VERSION %q does not list 1.1.0 (%v)", out.String(), err)
	}
	os.Unsetenv("CNI_COMMAND")
	out.Reset()
	var stderr bytes.Buffer
	if rc := run(Plugin[struct{}]{Name: "t"}, strings.NewReader(""), &out, &stderr); rc != 0 || out.Len() != 0 ||
		!strings.Contains(stderr.String(), "CNI protocol versions supported: 0.1.0") {
		t.Errorf("no CNI_COMMAND: exit %d, stdout %q, stderr %q", rc, out.String(), stderr.String())
	}
}

// setEnv sets a valid ADD environment with overrides ("" unsets).
func setEnv(t *testing.T, overrides []string) {
	t.Helper()
	env := map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_PATH": "/nonexistent",
		"CNI_NETNS": "/proc/self/ns/net", "CNI_ARGS": "", "CNI_NETNS_OVERRIDE": "1"}
	for i := 0; i+1 < len(overrides); i += 2 {
		env[overrides[i]] = overrides[i+1]
	}
	for k, v := range env {
		t.Setenv(k, v)
		if v == "" {
			os.Unsetenv(k)
		}
	}
}

// runOurs runs run with handlers that succeed; it reports whether one was
// called and the error code (0: none).
func runOurs(t *testing.T, stdin string) (bool, uint) {
	t.Helper()
	called := false
	ok := func(context.Context, *Request[struct{}]) error { called = true; return nil }
	p := Plugin[struct{}]{Name: "t", AllowHostNS: true, Del: ok, Check: ok, GC: ok, Status: ok,
		Add: func(context.Context, *Request[struct{}]) (*current.Result, error) {
			called = true
			return &current.Result{IPs: []*current.IPConfig{{Address: net.IPNet{IP: net.IPv4(192, 0, 2, 2), Mask: net.CIDRMask(24, 32)}}}}, nil
		}}
	var out bytes.Buffer
	if rc := run(p, strings.NewReader(stdin), &out, io.Discard); rc == 0 {
		return called, 0
	}
	var e struct {
		CNIVersion string `json:"cniVersion"`
		types.Error
	}
	if err := json.Unmarshal(out.Bytes(), &e); err != nil || e.Code == 0 {
		t.Fatalf("failed without a coded error document: %q (%v)", out.String(), err)
	}
	if !slices.Contains(SupportedVersions, e.CNIVersion) {
		t.Errorf("error document in cniVersion %q", e.CNIVersion)
	}
	return called, e.Code
}

// runSkel runs skel as plugins did, with handlers that succeed.
func runSkel(t *testing.T, stdin string) (bool, uint) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "stdin")
	if err := os.WriteFile(f, []byte(stdin), 0o600); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	saved := os.Stdin
	os.Stdin = in
	defer func() { os.Stdin = saved }()
	called := false
	ok := func(*skel.CmdArgs) error { called = true; return nil }
	if e := skel.PluginMainFuncsWithError(skel.CNIFuncs{Add: ok, Del: ok, Check: ok, GC: ok, Status: ok}, version.All, ""); e != nil {
		return called, e.Code
	}
	return called, 0
}
