package ipam

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestReadAtClassifies: a missing entry is errNoEntry; a symlink, special
// file, directory or oversized file is garbage in the store (the address
// stays taken), never a store failure.
func TestReadAtClassifies(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ok"), []byte("c1\r\neth0"), 0o600)
	os.WriteFile(filepath.Join(dir, "big"), make([]byte, maxEntrySize+1), 0o600)
	os.Symlink("ok", filepath.Join(dir, "link"))
	os.Mkdir(filepath.Join(dir, "dir"), 0o700)
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	dirfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dirfd)
	if got, err := readAt(dirfd, "ok", maxEntrySize); err != nil || string(got) != "c1\r\neth0" {
		t.Errorf("readAt(ok) = %q, %v", got, err)
	}
	if _, err := readAt(dirfd, "none", maxEntrySize); !errors.Is(err, errNoEntry) {
		t.Errorf("readAt(missing) = %v, want errNoEntry", err)
	}
	for _, name := range []string{"big", "link", "dir", "fifo"} {
		_, err := readAt(dirfd, name, maxEntrySize)
		if !errors.Is(err, errGarbage) || errors.Is(err, ErrStore) {
			t.Errorf("readAt(%s) = %v, want garbage, not a store failure", name, err)
		}
	}
}
