package hostport

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/state"
)

func openStore(t *testing.T) (*state.Store, string) {
	t.Helper()
	root := t.TempDir()
	t.Setenv(state.EnvRoot, root)
	s, err := state.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s, root
}

func ports(t *testing.T, specs ...string) []netconf.Port {
	t.Helper()
	var in []netconf.PortMapping
	for _, s := range specs {
		// "proto/hostIP:port", hostIP may be empty
		proto, rest, _ := strings.Cut(s, "/")
		i := strings.LastIndex(rest, ":")
		m := netconf.PortMapping{Protocol: proto, HostIP: strings.Trim(rest[:i], "[]"), ContainerPort: 80}
		for _, c := range rest[i+1:] {
			m.HostPort = m.HostPort*10 + int(c-'0')
		}
		in = append(in, m)
	}
	out, err := netconf.ValidatePorts(in)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func key(cid string) netconf.Key {
	return netconf.Key{Network: "net1", ContainerID: cid, IfName: "eth0"}
}

// files lists every file under the store's ports directory.
func files(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(filepath.Join(root, "ports"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

func TestReserveOverlaps(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	if err := Reserve(ctx, s, key("a"), ports(t, "tcp/:8080", "udp/192.0.2.1:53", "tcp/[2001:db8::1]:443"), false); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		spec     string
		conflict bool
	}{
		{"tcp/:8080", true},                 // same
		{"tcp/192.0.2.9:8080", true},        // a's reservation covers every address
		{"tcp/[2001:db8::9]:8080", true},    // ... of both families
		{"udp/:8080", false},                // other protocol
		{"udp/192.0.2.1:53", true},          // same IP
		{"udp/192.0.2.2:53", false},         // other IP of the same family
		{"udp/0.0.0.0:53", true},            // family wildcard covers it
		{"udp/[::]:53", false},              // other family's wildcard
		{"udp/:53", true},                   // every address
		{"tcp/[::]:443", true},              // v6 wildcard over a v6 address
		{"tcp/0.0.0.0:443", false},          // v4 wildcard
		{"tcp/[2001:db8::1]:444", false},    // other port
		{"sctp/[2001:db8::1]:443", false},   // other protocol
		{"tcp/[2001:db8::1]:443", true},     // same
		{"tcp/[2001:db8::2]:443", false},    // other address
		{"tcp/192.0.2.1:443", false},        // other family
		{"udp/[2001:db8::1]:53", false},     // other family
		{"tcp/[2001:db8::1]:8080", true},    // under a's any-address 8080
		{"tcp/127.0.0.1:8080", true},        // loopback too
		{"tcp/[::1]:8080", true},            // v6 loopback too
		{"tcp/192.0.2.1:8081", false},       // neighbour port
		{"udp/[2001:db8::53]:53", false},    // v6 address vs v4 reservation
		{"udp/[::ffff:192.0.2.1]:53", true}, // a v4-mapped address is the v4 one
	}
	for _, tc := range cases {
		b := key("b")
		err := Reserve(ctx, s, b, ports(t, tc.spec), false)
		if rerr := Release(ctx, s, b); rerr != nil {
			t.Fatal(rerr)
		}
		if tc.conflict {
			if !errors.Is(err, ErrPortInUse) || cnierr.CodeOf(err) != cnierr.PortInUse {
				t.Errorf("%s: err = %v, want ErrPortInUse (101)", tc.spec, err)
			} else if !strings.Contains(err.Error(), "container a ") {
				t.Errorf("%s: error %q does not name the owner", tc.spec, err)
			}
		} else if err != nil {
			t.Errorf("%s: %v, want no conflict", tc.spec, err)
		}
	}
}

func TestReserveAllOrNothing(t *testing.T) {
	s, root := openStore(t)
	ctx := context.Background()
	if err := Reserve(ctx, s, key("a"), ports(t, "tcp/:9000"), false); err != nil {
		t.Fatal(err)
	}
	before := files(t, root)
	err := Reserve(ctx, s, key("b"), ports(t, "tcp/:9001", "udp/:9002", "tcp/:9000"), false)
	if !errors.Is(err, ErrPortInUse) {
		t.Fatalf("err = %v, want ErrPortInUse", err)
	}
	for _, want := range []string{"tcp port 9000", "container a", `network "net1"`, "eth0"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if after := files(t, root); !slices.Equal(before, after) {
		t.Errorf("a refused Reserve changed the store:\n%v\n->\n%v", before, after)
	}
	if held, _ := Held(ctx, s, key("b")); len(held) != 0 {
		t.Errorf("b holds %v after a refused Reserve", held)
	}
}

func TestReleaseHeldIdempotent(t *testing.T) {
	s, root := openStore(t)
	ctx := context.Background()
	want := ports(t, "tcp/:7000", "udp/[::1]:7001")
	if err := Reserve(ctx, s, key("a"), want, false); err != nil {
		t.Fatal(err)
	}
	// Reserving the same again (a retried ADD) is no conflict with itself
	// and adds nothing.
	if err := Reserve(ctx, s, key("a"), want[:1], false); err != nil {
		t.Fatalf("re-reserve own port: %v", err)
	}
	held, err := Held(ctx, s, key("a"))
	if err != nil || len(held) != 2 || held[0] != want[0] || held[1] != want[1] {
		t.Fatalf("Held = %v, %v; want %v", held, err, want)
	}
	for range 2 {
		if err := Release(ctx, s, key("a")); err != nil {
			t.Fatal(err)
		}
	}
	if f := files(t, root); len(f) != 0 {
		t.Errorf("files left after Release: %v", f)
	}
	if err := Release(ctx, s, key("never")); err != nil {
		t.Errorf("Release of a key without reservations: %v", err)
	}
	if err := Reserve(ctx, s, key("b"), want, false); err != nil {
		t.Errorf("ports not free after Release: %v", err)
	}
}

func TestGC(t *testing.T) {
	s, root := openStore(t)
	ctx := context.Background()
	other := netconf.Key{Network: "net2", ContainerID: "x", IfName: "eth0"}
	for i, k := range []netconf.Key{key("keep"), key("drop"), other} {
		if err := Reserve(ctx, s, k, ports(t, "tcp/:"+string(rune('1'+i))+"000"), false); err != nil {
			t.Fatal(err)
		}
	}
	// A reservation file whose index was lost (crash) is swept too.
	lost := ports(t, "udp/:4000")[0]
	if err := createEntry(s, lost, &entry{Network: "net1", ContainerID: "lost", IfName: "eth0", Owner: key("lost").Hash(), Port: toRec(lost)}); err != nil {
		t.Fatal(err)
	}
	if err := GC(ctx, s, "net1", []netconf.Key{key("keep")}); err != nil {
		t.Fatal(err)
	}
	for k, n := range map[netconf.Key]int{key("keep"): 1, key("drop"): 0, other: 1} {
		if held, _ := Held(ctx, s, k); len(held) != n {
			t.Errorf("%v holds %v after GC, want %d", k, held, n)
		}
	}
	for _, f := range files(t, root) {
		if strings.Contains(f, "4000") || strings.Contains(f, key("drop").Hash()) {
			t.Errorf("GC left %s", f)
		}
	}
	if err := GC(ctx, s, "net1", nil); err != nil {
		t.Fatal(err)
	}
	if held, _ := Held(ctx, s, key("keep")); len(held) != 0 {
		t.Errorf("GC with no valid attachments kept %v", held)
	}
}

func TestCorruptEntryRefusesNotPanics(t *testing.T) {
	s, root := openStore(t)
	ctx := context.Background()
	dir := filepath.Join(root, "ports", "tcp", "6000")
	os.MkdirAll(dir, 0o700)
	os.WriteFile(filepath.Join(dir, "any"), []byte("{garbage"), 0o600)
	err := Reserve(ctx, s, key("a"), ports(t, "tcp/:6000"), false)
	if !errors.Is(err, ErrPortInUse) || !strings.Contains(err.Error(), "unreadable") {
		t.Fatalf("err = %v, want ErrPortInUse naming an unreadable reservation", err)
	}
	// A garbage index is dropped by Release rather than failing DEL.
	os.MkdirAll(filepath.Join(root, "ports", "owners"), 0o700)
	os.WriteFile(filepath.Join(root, "ports", "owners", key("b").Hash()+".json"), []byte("nope"), 0o600)
	if err := Release(ctx, s, key("b")); err != nil {
		t.Fatalf("Release with a garbage index: %v", err)
	}
	if _, err := Held(ctx, s, key("b")); err != nil {
		t.Errorf("Held after Release: %v", err)
	}
}
