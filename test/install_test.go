package test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// install runs scripts/install.sh with args, from the built binaries.
func install(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(nettest.RepoRoot(), "scripts", "install.sh"), args...)
	cmd.Env = append(os.Environ(), nettest.EnvBin+"="+nettest.Bins(t))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("install.sh %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(x, y)
}

// TestInstall: every binary lands in the bin dir, executable; a loopback
// that is not ours is kept unless --force, ours is replaced; conflists are
// copied but an edited one is kept unless --force.
func TestInstall(t *testing.T) {
	bins := nettest.Bins(t)
	dest, conf := t.TempDir(), t.TempDir()
	install(t, "--conf", conf, dest)
	entries, err := os.ReadDir(bins)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		p := filepath.Join(dest, e.Name())
		st, err := os.Stat(p)
		if err != nil {
			t.Fatalf("%s not installed: %v", e.Name(), err)
		}
		if st.Mode().Perm() != 0o755 || !sameFile(t, p, filepath.Join(bins, e.Name())) {
			t.Errorf("%s: mode %v or content differs from %s", p, st.Mode(), bins)
		}
	}
	examples, _ := filepath.Glob(filepath.Join(nettest.RepoRoot(), "conf-examples", "*.conflist"))
	if len(examples) == 0 {
		t.Fatal("no conf-examples")
	}
	for _, f := range examples {
		if !sameFile(t, f, filepath.Join(conf, filepath.Base(f))) {
			t.Errorf("%s not copied", filepath.Base(f))
		}
	}

	lo, edited := filepath.Join(dest, "loopback"), filepath.Join(conf, filepath.Base(examples[0]))
	foreign := []byte("#!/bin/sh\necho the reference loopback\n")
	for _, w := range []struct {
		path string
		data []byte
	}{{lo, foreign}, {edited, []byte("{}\n")}} {
		if err := os.WriteFile(w.path, w.data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	out := install(t, "--conf", conf, dest)
	if b, _ := os.ReadFile(lo); !bytes.Equal(b, foreign) || !strings.Contains(out, "keeping the existing "+lo) {
		t.Errorf("a foreign loopback was not kept:\n%s", out)
	}
	if b, _ := os.ReadFile(edited); string(b) != "{}\n" {
		t.Errorf("an edited %s was overwritten without --force", edited)
	}
	install(t, "--force", "--conf", conf, dest)
	if !sameFile(t, lo, filepath.Join(bins, "loopback")) || !sameFile(t, edited, examples[0]) {
		t.Error("--force did not replace the foreign loopback and the edited conflist")
	}
	// Ours is replaced without --force: an upgrade must not keep an old one.
	if err := os.WriteFile(lo, []byte("#!/bin/sh\necho netdrivers loopback, older\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	install(t, dest)
	if !sameFile(t, lo, filepath.Join(bins, "loopback")) {
		t.Error("our own older loopback was kept")
	}
}
