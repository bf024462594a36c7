package state

import (
	"context"
	"errors"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sync"
	"testing"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/safefile"
)

func TestOpenClearsAnEarlierBoot(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(EnvRoot, dir)
	os.WriteFile(filepath.Join(dir, "boot_id"), []byte("0b0e1d2c-3a4f-4b5c-8d6e-7f8091a2b3c4"), 0o600)
	os.MkdirAll(filepath.Join(dir, "ports"), 0o700)
	os.WriteFile(filepath.Join(dir, "ports", "tcp-80"), []byte("stale"), 0o600)
	s, err := Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "ports")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state of an earlier boot survived: %v", err)
	}
	boot, _ := safefile.BootID()
	if b, _ := os.ReadFile(filepath.Join(dir, "boot_id")); string(b) != boot {
		t.Errorf("boot_id = %q, want %q", b, boot)
	}
	// This boot's state survives the next Open.
	if err := s.Put("ports/tcp-80", map[string]string{"owner": "x"}); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	var v map[string]string
	if ok, err := s.Get("ports/tcp-80", &v); !ok || err != nil || v["owner"] != "x" {
		t.Errorf("Get after reopen = %v %v %v", ok, err, v)
	}
}

// isBootID is the pattern of a kernel boot_id, without the regexp package.
func TestIsBootID(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	boot, _ := safefile.BootID()
	for _, s := range []string{boot, "0b0e1d2c-3a4f-4b5c-8d6e-7f8091a2b3c4", "0B0E1D2C-3A4F-4B5C-8D6E-7F8091A2B3C4",
		"0b0e1d2c-3a4f-4b5c-8d6e-7f8091a2b3c4\n", "0b0e1d2c-3a4f-4b5c-8d6e-7f8091a2b3c", "0b0e1d2c3-a4f-4b5c-8d6e-7f8091a2b3c4",
		"0b0e1d2c-3a4f-4b5c-8d6e-7f8091a2b3g4", "0b0e1d2c-3a4f-4b5c-8d6e+7f8091a2b3c4", "", "garbage"} {
		if got, want := isBootID([]byte(s)), re.MatchString(s); got != want {
			t.Errorf("isBootID(%q) = %v, want %v", s, got, want)
		}
	}
	if !isBootID([]byte(boot)) {
		t.Errorf("this boot's id %q is not a boot_id", boot)
	}
}

// A damaged marker proves nothing about the state's boot: it is kept.
func TestOpenKeepsStateBehindADamagedMarker(t *testing.T) {
	for _, marker := range []string{"garbage", "", "0B0E1D2C-3A4F-4B5C-8D6E-7F8091A2B3C4x"} {
		dir := t.TempDir()
		t.Setenv(EnvRoot, dir)
		os.WriteFile(filepath.Join(dir, "boot_id"), []byte(marker), 0o600)
		os.MkdirAll(filepath.Join(dir, "ports"), 0o700)
		os.WriteFile(filepath.Join(dir, "ports", "tcp-80"), []byte("live"), 0o600)
		if _, err := Open(context.Background()); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "ports", "tcp-80")); err != nil || string(b) != "live" {
			t.Errorf("marker %q: state lost (%v)", marker, err)
		}
		boot, _ := safefile.BootID()
		if b, _ := os.ReadFile(filepath.Join(dir, "boot_id")); string(b) != boot {
			t.Errorf("marker %q not rewritten: %q", marker, b)
		}
	}
}

func TestAttachmentRecords(t *testing.T) {
	t.Setenv(EnvRoot, t.TempDir())
	s, err := Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	k := netconf.Key{Network: "net1", ContainerID: "c1", IfName: "eth0"}
	if a, err := s.GetAttachment(k); a != nil || err != nil {
		t.Fatalf("missing record = %v, %v", a, err)
	}
	rec := &Attachment{Network: k.Network, ContainerID: k.ContainerID, IfName: k.IfName, Plugin: "p", Objects: map[string]string{"veth": "vethx"}}
	if err := s.PutAttachment(rec); err != nil {
		t.Fatal(err)
	}
	other := &Attachment{Network: "net2", ContainerID: "c1", IfName: "eth0"}
	s.PutAttachment(other)
	got, err := s.Attachments("net1")
	if err != nil || len(got) != 1 || got[0].Objects["veth"] != "vethx" {
		t.Fatalf("Attachments(net1) = %v, %v", got, err)
	}
	// Garbage is reported, never trusted.
	os.WriteFile(s.Path(attachmentPath("net1", "0123456789abcdef")), []byte("{garbage"), 0o600)
	got, err = s.Attachments("net1")
	if len(got) != 1 || !errors.Is(err, ErrCorrupt) {
		t.Errorf("with garbage: %v, %v", got, err)
	}
	if err := s.DelAttachment(k); err != nil {
		t.Fatal(err)
	}
	if err := s.DelAttachment(k); err != nil {
		t.Errorf("second DelAttachment = %v", err)
	}
}

// A record whose write was killed between link and rename is listed (and
// so found by GC) under its final name.
func TestListPromotesStagedRecord(t *testing.T) {
	t.Setenv(EnvRoot, t.TempDir())
	s, err := Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rec := &Attachment{Network: "net1", ContainerID: "c1", IfName: "eth0"}
	if err := s.PutAttachment(rec); err != nil {
		t.Fatal(err)
	}
	final := s.Path(attachmentPath("net1", rec.Key().Hash()))
	if err := os.Rename(final, safefile.TempName(final)); err != nil { // as if killed before the rename
		t.Fatal(err)
	}
	got, err := s.Attachments("net1")
	if err != nil || len(got) != 1 || got[0].ContainerID != "c1" {
		t.Fatalf("Attachments = %v, %v; want the staged record", got, err)
	}
	if err := s.DelAttachment(rec.Key()); err != nil {
		t.Fatal(err)
	}
	if names, _ := s.List(path.Dir(attachmentPath("net1", "x"))); len(names) != 0 {
		t.Errorf("left after DelAttachment: %v", names)
	}
}

// A record whose write was killed between link and rename is found by Get
// too (a DEL looks it up by name, never listing), under its final name.
func TestGetPromotesStagedRecord(t *testing.T) {
	t.Setenv(EnvRoot, t.TempDir())
	s, err := Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put("sub/rec.json", map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	final := s.Path("sub/rec.json")
	if err := os.Rename(final, safefile.TempName(final)); err != nil { // as if killed before the rename
		t.Fatal(err)
	}
	var got map[string]string
	if ok, err := s.Get("sub/rec.json", &got); !ok || err != nil || got["k"] != "v" {
		t.Fatalf("Get = %v, %v, %v; want the staged record", ok, err, got)
	}
	if _, err := os.Lstat(safefile.TempName(final)); !os.IsNotExist(err) {
		t.Errorf("staging name still there after Get: %v", err)
	}
	if ok, err := s.Get("sub/missing.json", &got); ok || err != nil {
		t.Errorf("Get of a missing record = %v, %v", ok, err)
	}
}

// TestWritableConcurrent: STATUS calls that probe the state dir at the
// same time (found by the soak) each succeed.
func TestWritableConcurrent(t *testing.T) {
	t.Setenv(EnvRoot, t.TempDir())
	s, err := Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 16*50)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				errs <- s.Writable()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(s.root, ".*probe*")); len(left) > 0 {
		t.Errorf("probes left behind: %v", left)
	}
}

// TestOpenWritable: STATUS's open gives a store it could write to, and a
// store it cannot open is code 50 (a node-wide fault), not an I/O error.
func TestOpenWritable(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(EnvRoot, dir)
	if s, err := OpenWritable(context.Background()); err != nil || s == nil {
		t.Fatalf("OpenWritable on a usable dir = %v, %v", s, err)
	}
	if probes, _ := filepath.Glob(filepath.Join(dir, ".probe-*")); len(probes) > 0 {
		t.Errorf("probe files left behind: %v", probes)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvRoot, filepath.Join(file, "state"))
	s, err := OpenWritable(context.Background())
	if s != nil || cnierr.CodeOf(err) != cnierr.NotAvailable {
		t.Errorf("OpenWritable below a regular file = %v, %v (code %d), want code %d", s, err, cnierr.CodeOf(err), cnierr.NotAvailable)
	}
}
