package safefile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
)

func TestReadRefusesSymlinksAndSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("x"), 0o600)
	link := filepath.Join(dir, "link")
	os.Symlink(secret, link)
	if _, err := Read(link); !errors.Is(err, ErrNotRegular) {
		t.Errorf("Read(symlink) = %v, want ErrNotRegular", err)
	}
	if _, err := Read(dir); !errors.Is(err, ErrNotRegular) {
		t.Errorf("Read(dir) = %v, want ErrNotRegular", err)
	}
	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, MaxSize+1), 0o600)
	if _, err := Read(big); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Read(big) = %v, want ErrTooLarge", err)
	}
	if _, err := Read(filepath.Join(dir, "none")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Read(missing) = %v, want ErrNotExist", err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(fifo); !errors.Is(err, ErrNotRegular) { // and does not block
		t.Errorf("Read(fifo) = %v, want ErrNotRegular", err)
	}
}

// TestReadAt: names are taken relative to the directory fd, max bounds
// what is read, and a symlink is refused there too.
func TestReadAt(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ten"), []byte("0123456789"), 0o600)
	os.Symlink("ten", filepath.Join(dir, "link"))
	dirfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dirfd)
	if got, err := ReadAt(dirfd, "ten", 10); err != nil || string(got) != "0123456789" {
		t.Errorf("ReadAt(ten, max 10) = %q, %v", got, err)
	}
	if got, err := ReadAt(dirfd, "ten", 9); !errors.Is(err, ErrTooLarge) {
		t.Errorf("ReadAt(ten, max 9) = %q, %v, want ErrTooLarge", got, err)
	}
	if _, err := ReadAt(dirfd, "link", 10); !errors.Is(err, ErrNotRegular) {
		t.Errorf("ReadAt(symlink) = %v, want ErrNotRegular", err)
	}
	if _, err := ReadAt(dirfd, "none", 10); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadAt(missing) = %v, want ErrNotExist", err)
	}
}

// TestReadWriteSizes: what WriteAtomic and CreateExclusive write, Read
// returns, at sizes around its buffer's growth and at the limit.
func TestReadWriteSizes(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []int{0, 1, 511, 512, 513, 4097, MaxSize} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i * 7)
		}
		p := filepath.Join(dir, fmt.Sprint("f", n))
		if err := WriteAtomic(p, data, 0o640); err != nil {
			t.Fatal(err)
		}
		if err := CreateExclusive(p+".x", data, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{p, p + ".x"} {
			got, err := Read(q)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("Read(%d bytes) = %d bytes, %v", n, len(got), err)
			}
		}
		if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o640 {
			t.Errorf("mode of %s = %v, %v, want 0640", p, st.Mode(), err)
		}
	}
}

func TestWriteAtomicReplacesSymlinkNotTarget(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	os.WriteFile(target, []byte("keep"), 0o600)
	p := filepath.Join(dir, "state")
	os.Symlink(target, p)
	if err := WriteAtomic(p, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Errorf("symlink target was written: %q", b)
	}
	if b, err := Read(p); err != nil || string(b) != "new" {
		t.Errorf("Read after WriteAtomic = %q, %v", b, err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if IsTemp(e.Name()) {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
}

func TestCreateExclusive(t *testing.T) {
	p := filepath.Join(t.TempDir(), "10.0.0.2")
	if err := CreateExclusive(p, []byte("a\r\neth0"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CreateExclusive(p, []byte("b\r\neth0"), 0o600); !errors.Is(err, os.ErrExist) {
		t.Errorf("second create = %v, want ErrExist", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "a\r\neth0" {
		t.Errorf("content = %q", b)
	}
}

func TestLockExcludesAndTimesOut(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lock")
	l, err := Acquire(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := Acquire(ctx, p); cnierr.CodeOf(err) != cnierr.TryAgainLater {
		t.Errorf("second Acquire = %v, want code 11", err)
	}
	got := make(chan error, 1)
	go func() {
		l2, err := Acquire(context.Background(), p)
		if err == nil {
			l2.Unlock()
		}
		got <- err
	}()
	l.Unlock()
	if err := <-got; err != nil {
		t.Errorf("Acquire after Unlock = %v", err)
	}
}

func TestBootInfo(t *testing.T) {
	id, err := BootID()
	if err != nil || len(id) < 16 {
		t.Errorf("BootID() = %q, %v", id, err)
	}
	bt, err := BootTime()
	if err != nil || bt.After(time.Now()) || bt.Year() < 2000 {
		t.Errorf("BootTime() = %v, %v", bt, err)
	}
}

// A staging name left by a writer killed between link and rename is taken
// over by the next write and removed with the file.
func TestStaleStagingName(t *testing.T) {
	p := filepath.Join(t.TempDir(), "rec.json")
	os.WriteFile(TempName(p), []byte("stale"), 0o600)
	if err := WriteAtomic(p, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(TempName(p)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("staging name survived a write: %v", err)
	}
	os.WriteFile(TempName(p), []byte("stale"), 0o600)
	if err := RemoveWithTemp(p); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 0 {
		t.Errorf("left after RemoveWithTemp: %v", entries)
	}
	if err := RemoveWithTemp(p); err != nil {
		t.Errorf("second RemoveWithTemp: %v", err)
	}
}
