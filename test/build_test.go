package test

import (
	"bytes"
	"debug/buildinfo"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// TestBuildFlags holds the binaries to what scripts/build.sh promises and
// the README's Performance section measures: memory profiling off from
// the first allocation everywhere, and macvlan with netlink (among others)
// not inlined.
func TestBuildFlags(t *testing.T) {
	bin := nettest.Bins(t)
	for _, name := range []string{"none", "loopback", "host-local-bridge", "macvlan", "hostns", "joinns"} {
		data, err := os.ReadFile(filepath.Join(bin, name))
		if err != nil {
			t.Fatal(err)
		}
		// The compiled-in GODEBUG default (runtime.godebugDefault).
		if !bytes.Contains(data, []byte("memprofilerate=0")) {
			t.Errorf("%s: built without the memprofilerate=0 default", name)
		}
		info, err := buildinfo.ReadFile(filepath.Join(bin, name))
		if err != nil {
			t.Fatal(err)
		}
		var gcflags string
		for _, s := range info.Settings {
			if s.Key == "-gcflags" {
				gcflags = s.Value
			}
		}
		noInline := strings.Contains(gcflags, "github.com/vishvananda/netlink/...=-l")
		if want := name == "macvlan"; noInline != want {
			t.Errorf("%s: netlink without inlining = %v (gcflags %q), want %v", name, noInline, gcflags, want)
		}
	}
}
