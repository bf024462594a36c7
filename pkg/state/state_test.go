package state

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/safefile"
)

func TestOpenClearsAnEarlierBoot(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(EnvRoot, dir)
	os.WriteFile(filepath.Join(dir, "boot_id"), []byte("an-earlier-boot"), 0o600)
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
