package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// builtin returns a host-local config on a fresh data dir.
func builtin(t testing.TB, ipam map[string]any) *Config {
	t.Helper()
	ipam["type"] = "host-local"
	if ipam["dataDir"] == nil {
		ipam["dataDir"] = t.TempDir()
	}
	return mustLoad(t.(*testing.T), map[string]any{"cniVersion": "1.0.0", "name": "net1", "ipam": ipam})
}

func netDir(c *Config) string { return filepath.Join(c.DataDir, c.network) }

func key(id string) netconf.Key { return netconf.Key{Network: "net1", ContainerID: id, IfName: "eth0"} }

// storeFiles lists the network directory as name => content (index
// excluded), the way the reference binary would see its entries.
func storeFiles(t *testing.T, c *Config) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(netDir(c))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range ents {
		if e.Name() == indexDirName || e.Name() == lockName {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(netDir(c), e.Name()))
		out[e.Name()] = string(b)
	}
	return out
}

// refReserve writes an entry as the reference binary does (O_EXCL, then
// the content), with no regard for our index.
func refReserve(t *testing.T, c *Config, ip, id, ifname string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(netDir(c), ip), os.O_RDWR|os.O_EXCL|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(id + "\r\n" + ifname)
	f.Close()
}

func addrStrings(res *current.Result) string {
	var s []string
	for _, ip := range res.IPs {
		s = append(s, ip.Address.String())
	}
	return strings.Join(s, ",")
}

func TestBuiltinLifecycle(t *testing.T) {
	t.Parallel()
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(resolv, []byte("# c\nnameserver 192.0.2.53\nsearch a.example b.example\noptions ndots:2\ndomain x.example\n"), 0o644)
	c := builtin(t, map[string]any{"resolvConf": resolv, "routes": []any{map[string]any{"dst": "0.0.0.0/0"}},
		"ranges": []any{[]any{map[string]any{"subnet": "10.5.0.0/24"}}, []any{map[string]any{"subnet": "2001:db8:5::/64"}}}})
	ctx := context.Background()
	res, err := Allocate(ctx, c, key("a"))
	if err != nil {
		t.Fatal(err)
	}
	if got := addrStrings(res); got != "10.5.0.2/24,2001:db8:5::2/64" {
		t.Fatalf("addresses = %s", got)
	}
	if res.IPs[0].Gateway.String() != "10.5.0.1" || res.IPs[1].Gateway.String() != "2001:db8:5::1" || len(res.Interfaces) != 0 {
		t.Errorf("result = %+v, want gateways .1 and ::1, no interfaces", res)
	}
	if len(res.Routes) != 1 || res.DNS.Nameservers[0] != "192.0.2.53" || res.DNS.Domain != "x.example" ||
		strings.Join(res.DNS.Search, " ") != "a.example b.example" || res.DNS.Options[0] != "ndots:2" {
		t.Errorf("routes %v, dns %+v", res.Routes, res.DNS)
	}
	want := map[string]string{"10.5.0.2": "a\r\neth0", "2001:db8:5::2": "a\r\neth0",
		"last_reserved_ip.0": "10.5.0.2", "last_reserved_ip.1": "2001:db8:5::2"}
	if got := storeFiles(t, c); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("store = %q, want the reference layout %q", got, want)
	}
	if got, err := Addresses(ctx, c, key("a")); err != nil || fmt.Sprint(got) != "[10.5.0.2/24 2001:db8:5::2/64]" {
		t.Errorf("Addresses = %v, %v", got, err)
	}
	if err := Check(ctx, c, key("a"), res); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := Check(ctx, c, key("b"), res); !errors.Is(err, ErrNotHeld) || !strings.Contains(err.Error(), `held by container "a"`) {
		t.Errorf("CHECK of another attachment = %v, want ErrNotHeld naming the holder", err)
	}
	if err := Check(ctx, c, key("b"), nil); !errors.Is(err, ErrNotHeld) {
		t.Errorf("CHECK without prevResult of an attachment holding nothing = %v", err)
	}
	for range 2 {
		if err := Release(ctx, c, key("a")); err != nil {
			t.Fatal(err)
		}
	}
	if err := Check(ctx, c, key("a"), res); !errors.Is(err, ErrNotHeld) || !strings.Contains(err.Error(), "10.5.0.2 is not reserved") {
		t.Errorf("CHECK after DEL = %v", err)
	}
	if got := storeFiles(t, c); len(got) != 2 {
		t.Errorf("store after DEL = %q, want only last_reserved_ip files", got)
	}
	res, err = Allocate(ctx, c, key("b"))
	if err != nil || addrStrings(res) != "10.5.0.3/24,2001:db8:5::3/64" {
		t.Errorf("next ADD = %v, %v; want round-robin .3", res, err)
	}
}

func TestReleaseOfNothing(t *testing.T) {
	t.Parallel()
	c := builtin(t, map[string]any{"subnet": "10.6.0.0/24"})
	c.DataDir = filepath.Join(c.DataDir, "never-created")
	ctx := context.Background()
	if err := Release(ctx, c, key("x")); err != nil {
		t.Errorf("DEL on a store that does not exist: %v", err)
	}
	if a, err := Addresses(ctx, c, key("x")); a != nil || err != nil {
		t.Errorf("Addresses on no store = %v, %v", a, err)
	}
	if err := GC(ctx, c, nil); err != nil {
		t.Errorf("GC on no store: %v", err)
	}
	if _, err := os.Stat(c.DataDir); !os.IsNotExist(err) {
		t.Errorf("DEL/GC created the store: %v", err)
	}
}

func TestExhausted(t *testing.T) {
	t.Parallel()
	c := builtin(t, map[string]any{"subnet": "10.7.0.0/30"})
	ctx := context.Background()
	if _, err := Allocate(ctx, c, key("a")); err != nil {
		t.Fatal(err)
	}
	_, err := Allocate(ctx, c, key("b"))
	if !errors.Is(err, ErrExhausted) || cnierr.CodeOf(err) != cnierr.PoolExhausted || !strings.Contains(err.Error(), "10.7.0.1-10.7.0.2") {
		t.Fatalf("full pool = %v (code %d), want code 100 naming the range", err, cnierr.CodeOf(err))
	}
	if err := Status(ctx, c); err != nil {
		t.Errorf("STATUS with a full pool = %v, want nil", err)
	}
	if len(storeFiles(t, c)) != 2 {
		t.Errorf("failed ADD left entries: %q", storeFiles(t, c))
	}
}

// sameTick runs a foreign change of c's directory as a kernel with coarse
// timestamps would stamp it when it comes within the clock tick of our
// last change: with the directory's ctime from before (this kernel's
// multigrain timestamps would otherwise hide the case).
func sameTick(t *testing.T, c *Config, change func()) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(netDir(c), &st); err != nil {
		t.Fatal(err)
	}
	change()
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, netDir(c), []unix.Timespec{{Nsec: unix.UTIME_OMIT}, st.Ctim}, 0); err != nil {
		t.Fatal(err)
	}
}

// TestForeignWritesSeen has the "reference binary" change the directory
// right after each of our calls, within the same clock tick: the index
// must notice every time.
func TestForeignWritesSeen(t *testing.T) {
	t.Parallel()
	c := builtin(t, map[string]any{"subnet": "10.8.0.0/16"})
	ctx := context.Background()
	for i := range 50 {
		id := fmt.Sprintf("ours%d", i)
		if _, err := Allocate(ctx, c, key(id)); err != nil {
			t.Fatal(err)
		}
		foreign := fmt.Sprintf("10.8.200.%d", i)
		sameTick(t, c, func() { refReserve(t, c, foreign, fmt.Sprintf("ref%d", i), "eth0") })
		got, err := Addresses(ctx, c, key(fmt.Sprintf("ref%d", i)))
		if err != nil || len(got) != 1 || got[0].Addr().String() != foreign {
			t.Fatalf("round %d: Addresses of a foreign entry = %v, %v", i, got, err)
		}
		// And a foreign release right after ours.
		sameTick(t, c, func() {
			if err := os.Remove(filepath.Join(netDir(c), foreign)); err != nil {
				t.Fatal(err)
			}
		})
		if got, _ := Addresses(ctx, c, key(fmt.Sprintf("ref%d", i))); len(got) != 0 {
			t.Fatalf("round %d: released foreign entry still reported: %v", i, got)
		}
	}
}

func TestIndexRecoversFromDamage(t *testing.T) {
	t.Parallel()
	c := builtin(t, map[string]any{"subnet": "10.9.0.0/24"})
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c"} {
		if _, err := Allocate(ctx, c, key(id)); err != nil {
			t.Fatal(err)
		}
	}
	idx := filepath.Join(netDir(c), indexDirName)
	// Garbage in a bucket, a bucket deleted, the state made a symlink.
	os.WriteFile(filepath.Join(idx, bucketOf(owner{ID: "a", IfName: "eth0"})), []byte("garbage"), 0o600)
	os.Remove(filepath.Join(idx, bucketOf(owner{ID: "b", IfName: "eth0"})))
	os.Remove(filepath.Join(idx, stateName))
	os.Symlink("/etc/hostname", filepath.Join(idx, stateName))
	for _, id := range []string{"a", "b", "c"} {
		if got, err := Addresses(ctx, c, key(id)); err != nil || len(got) != 1 {
			t.Errorf("Addresses(%s) after index damage = %v, %v", id, got, err)
		}
	}
	// The whole index directory replaced by a symlink: never followed.
	elsewhere := t.TempDir()
	os.RemoveAll(idx)
	os.Symlink(elsewhere, idx)
	if err := Release(ctx, c, key("b")); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(idx); err != nil || !fi.IsDir() {
		t.Errorf("index dir = %v, %v; want a real directory again", fi, err)
	}
	if ents, _ := os.ReadDir(elsewhere); len(ents) != 0 {
		t.Errorf("wrote through the symlinked index dir: %v", ents)
	}
	if got, _ := Addresses(ctx, c, key("c")); len(got) != 1 {
		t.Errorf("c lost its address: %v", got)
	}
}

func TestHostileEntries(t *testing.T) {
	t.Parallel()
	c := builtin(t, map[string]any{"subnet": "10.10.0.0/29"})
	ctx := context.Background()
	dir := netDir(c)
	if _, err := Allocate(ctx, c, key("first")); err != nil { // .2
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "target")
	os.WriteFile(target, []byte("victim\r\neth0"), 0o600)
	os.Symlink(target, filepath.Join(dir, "10.10.0.3"))                                // a symlink whose target names "victim"
	os.WriteFile(filepath.Join(dir, "10.10.0.4"), []byte("\x00\x01garbage"), 0o600)    // garbage
	os.WriteFile(filepath.Join(dir, "10.10.0.5"), make([]byte, 2*maxEntrySize), 0o600) // oversized
	os.WriteFile(filepath.Join(dir, "10.10.0.6"), nil, 0o600)                          // empty (a crashed reference write)
	os.Remove(filepath.Join(dir, "last_reserved_ip.0"))
	os.Symlink(target, filepath.Join(dir, "last_reserved_ip.0")) // never written through
	// .3-.6 are taken by files that cannot be trusted, .1 is the gateway.
	res, err := Allocate(ctx, c, key("second"))
	if err == nil {
		t.Fatalf("ADD got %s; .3-.6 are blocked by untrusted entries and .1 is the gateway, want exhausted", addrStrings(res))
	}
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("ADD = %v, want exhausted", err)
	}
	if b, _ := os.ReadFile(target); string(b) != "victim\r\neth0" {
		t.Errorf("symlink target changed: %q", b)
	}
	if err := Release(ctx, c, key("victim")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "10.10.0.3")); err != nil {
		t.Errorf("DEL of the name a symlinked entry points at removed it: %v", err)
	}
	if err := GC(ctx, c, nil); err != nil {
		t.Errorf("GC: %v", err)
	}
	if _, err := os.Stat(target); err != nil {
		t.Errorf("GC touched the symlink target: %v", err)
	}
	if got := storeFiles(t, c); got["10.10.0.2"] != "" {
		t.Errorf("GC with no valid attachments kept %q", got["10.10.0.2"])
	}
	// The lock itself a symlink: refused, not followed.
	os.Remove(filepath.Join(dir, lockName))
	os.Symlink(target, filepath.Join(dir, lockName))
	if _, err := Allocate(ctx, c, key("third")); cnierr.CodeOf(err) != cnierr.IOFailure {
		t.Errorf("ADD with a symlinked lock = %v (code %d), want code 5", err, cnierr.CodeOf(err))
	}
	if err := Status(ctx, c); cnierr.CodeOf(err) != cnierr.NotAvailable {
		t.Errorf("STATUS with a symlinked lock = %v (code %d), want code 50", err, cnierr.CodeOf(err))
	}
}

func TestGC(t *testing.T) {
	t.Parallel()
	c := builtin(t, map[string]any{"subnet": "10.11.0.0/24"})
	ctx := context.Background()
	for _, id := range []string{"keep", "drop"} {
		if _, err := Allocate(ctx, c, key(id)); err != nil {
			t.Fatal(err)
		}
	}
	refReserve(t, c, "10.11.0.100", "refkeep", "eth1")
	refReserve(t, c, "10.11.0.101", "refdrop", "eth0")
	os.WriteFile(filepath.Join(netDir(c), "10.11.0.102"), []byte("oldformat"), 0o600)
	os.WriteFile(filepath.Join(netDir(c), "10.11.0.103"), []byte("oldkept"), 0o600)
	valid := []types.GCAttachment{{ContainerID: "keep", IfName: "eth0"}, {ContainerID: "refkeep", IfName: "eth1"},
		{ContainerID: "oldkept", IfName: "eth3"}, {ContainerID: "drop", IfName: "eth9"}}
	if err := GC(ctx, c, valid); err != nil {
		t.Fatal(err)
	}
	var names []string
	for n := range storeFiles(t, c) {
		if !strings.HasPrefix(n, lastIPPrefix) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	if got := strings.Join(names, " "); got != "10.11.0.100 10.11.0.103 10.11.0.2" {
		t.Errorf("after GC: %s; want keep (.2), refkeep (.100) and the old-format entry of a valid container (.103)", got)
	}
	if got, _ := Addresses(ctx, c, key("drop")); len(got) != 0 {
		t.Errorf("index still lists drop: %v", got)
	}
}

func TestStatusNotWritable(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	c := builtin(t, map[string]any{"subnet": "10.12.0.0/24", "dataDir": filepath.Join(file, "sub")})
	if err := Status(context.Background(), c); cnierr.CodeOf(err) != cnierr.NotAvailable {
		t.Errorf("STATUS on a data dir under a file = %v (code %d), want code 50", err, cnierr.CodeOf(err))
	}
	c = builtin(t, map[string]any{"subnet": "10.12.0.0/24", "dataDir": filepath.Join(t.TempDir(), "a", "b")})
	if err := Status(context.Background(), c); err != nil {
		t.Errorf("STATUS on a creatable data dir = %v", err)
	}
	if _, err := os.Stat(c.DataDir); !os.IsNotExist(err) {
		t.Errorf("STATUS created the data dir")
	}
}

// TestStatusFullDisk: on a full data dir every reservation fails, so
// STATUS must too (access(2) alone passes there), naming the store; it
// passes again once there is room.
func TestStatusFullDisk(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	disk := nettest.NewTmpfs(t, 1<<20)
	c := builtin(t, map[string]any{"subnet": "10.12.1.0/24", "dataDir": disk.Path})
	ctx := context.Background()
	if err := Status(ctx, c); err != nil {
		t.Fatal(err)
	}
	disk.Fill(t)
	if _, err := Allocate(ctx, c, key("a")); err == nil {
		t.Errorf("ADD on a full data dir succeeded")
	}
	err := Status(ctx, c)
	if cnierr.CodeOf(err) != cnierr.NotAvailable || !strings.Contains(fmt.Sprint(err), netDir(c)+" is full") {
		t.Errorf("STATUS on a full data dir = %v (code %d), want code 50 naming %s", err, cnierr.CodeOf(err), netDir(c))
	}
	disk.Free(t)
	if err := Status(ctx, c); err != nil {
		t.Errorf("STATUS once there is room: %v", err)
	}
}

// TestConcurrentGoroutines: every call takes the flock through its own
// open file, so goroutines exclude each other as processes do.
func TestConcurrentGoroutines(t *testing.T) {
	t.Parallel()
	c := builtin(t, map[string]any{"subnet": "10.13.0.0/24"})
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Go(func() {
			_, err := Allocate(ctx, c, key(fmt.Sprintf("g%d", i)))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	files := storeFiles(t, c)
	owners := map[string]bool{}
	for n, v := range files {
		if !strings.HasPrefix(n, lastIPPrefix) {
			owners[v] = true
		}
	}
	if len(owners) != 32 || len(files) != 33 {
		t.Fatalf("%d entries for %d owners, want 32 distinct", len(files)-1, len(owners))
	}
}

// TestBootReclaim: entries of an earlier boot go at the boot's first
// call, this boot's stay, whoever made them.
func TestBootReclaim(t *testing.T) {
	t.Parallel()
	c := builtin(t, map[string]any{"subnet": "10.14.0.0/24"})
	ctx := context.Background()
	for _, id := range []string{"old", "now"} {
		if _, err := Allocate(ctx, c, key(id)); err != nil {
			t.Fatal(err)
		}
	}
	refReserve(t, c, "10.14.0.50", "refentry", "eth0")
	// Pretend "old" was handed out in another boot and the index was last
	// written then.
	idx := filepath.Join(netDir(c), indexDirName)
	rec := &record{Owner: owner{ID: "old", IfName: "eth0"}, IPs: []recordIP{{IP: netip.MustParseAddr("10.14.0.2"), Boot: "00000000-1111-2222-3333-444444444444"}}}
	os.WriteFile(filepath.Join(idx, bucketOf(rec.Owner)), encodeBucket([]*record{rec}), 0o600)
	st := indexState{Boot: "00000000-1111-2222-3333-444444444444"}
	os.WriteFile(filepath.Join(idx, stateName), st.encode(), 0o600)
	// This boot began an hour ago: the reference's entry is from this boot.
	c.reclaimBefore = func() time.Time { return time.Now().Add(-time.Hour) }
	if got, _ := Addresses(ctx, c, key("now")); len(got) != 1 {
		t.Fatalf("this boot's entry reclaimed: %v", got)
	}
	files := storeFiles(t, c)
	if _, ok := files["10.14.0.2"]; ok {
		t.Error("entry handed out in an earlier boot survived the boot's first call")
	}
	if files["10.14.0.50"] != "refentry\r\neth0" || files["10.14.0.3"] != "now\r\neth0" {
		t.Errorf("this boot's entries were reclaimed: %q", files)
	}
	// Once the boot has been seen, nothing is reclaimed any more, even by
	// the time rule.
	c.reclaimBefore = func() time.Time { return time.Now().Add(time.Hour) }
	refReserve(t, c, "10.14.0.51", "late", "eth0")
	if got, _ := Addresses(ctx, c, key("late")); len(got) != 1 {
		t.Errorf("an entry made after the boot's first call was reclaimed")
	}
	// With no index state at all (a store the reference made), entries
	// whose inode changed before the boot began are reclaimed.
	os.RemoveAll(idx)
	if _, err := Addresses(ctx, c, key("now")); err != nil {
		t.Fatal(err)
	}
	if files := storeFiles(t, c); len(files) != 1 {
		t.Errorf("a store older than the boot kept %q", files)
	}
}

// TestNamedTmpFallback: on file systems without O_TMPFILE the entry is
// written aside outside the network directory, linked, and the temporary
// removed.
func TestNamedTmpFallback(t *testing.T) {
	t.Parallel()
	c := builtin(t, map[string]any{"subnet": "10.15.0.0/24"})
	s, err := openStore(context.Background(), c, bootID(), true)
	if err != nil {
		t.Fatal(err)
	}
	o := owner{ID: "fb", IfName: "eth0"}
	if err := s.makeNamedTmp(string(o.content())); err != nil {
		t.Fatal(err)
	}
	tmp := s.tmpPath
	if strings.HasPrefix(tmp, netDir(c)) {
		t.Errorf("temporary %s inside the network directory the reference walks", tmp)
	}
	ok, err := s.reserve(netip.MustParseAddr("10.15.0.9"), o)
	s.close()
	if !ok || err != nil {
		t.Fatalf("reserve = %v, %v", ok, err)
	}
	if got := storeFiles(t, c)["10.15.0.9"]; got != "fb\r\neth0" {
		t.Errorf("entry = %q", got)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Errorf("temporary left: %v", err)
	}
}

// TestGCContinuesPastErrors: an entry that cannot be removed (immutable)
// is reported, and GC still removes every other one.
func TestGCContinuesPastErrors(t *testing.T) {
	t.Parallel()
	c := builtin(t, map[string]any{"subnet": "10.16.0.0/24"})
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c"} {
		if _, err := Allocate(ctx, c, key(id)); err != nil {
			t.Fatal(err)
		}
	}
	stuck := filepath.Join(netDir(c), "10.16.0.3") // b's
	if err := setImmutable(stuck, true); err != nil {
		t.Skipf("cannot make a file immutable here: %v", err)
	}
	t.Cleanup(func() { setImmutable(stuck, false) })
	err := GC(ctx, c, nil)
	if err == nil || !strings.Contains(err.Error(), "10.16.0.3") {
		t.Fatalf("GC = %v, want an error naming 10.16.0.3", err)
	}
	files := storeFiles(t, c)
	if _, ok := files["10.16.0.2"]; ok {
		t.Error("GC stopped at the first error: a's entry is left")
	}
	if _, ok := files["10.16.0.4"]; ok {
		t.Error("GC stopped at the error: c's entry is left")
	}
	setImmutable(stuck, false)
	if got, _ := Addresses(ctx, c, key("b")); len(got) != 1 {
		t.Errorf("the entry GC could not remove is no longer indexed: %v", got)
	}
}

// fsImmutableFL is FS_IMMUTABLE_FL of linux/fs.h (not in x/sys/unix).
const fsImmutableFL = 0x10

func setImmutable(path string, on bool) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	flags, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		return err
	}
	if on {
		flags |= fsImmutableFL
	} else {
		flags &^= fsImmutableFL
	}
	return unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(flags))
}

// TestLoadForDel: DEL of a config ADD refused, or one edited to be invalid
// after ADD, still releases what the attachment holds.
func TestLoadForDel(t *testing.T) {
	t.Parallel()
	c := builtin(t, map[string]any{"subnet": "10.17.0.0/24"})
	ctx := context.Background()
	if _, err := Allocate(ctx, c, key("edited")); err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(c.stdin), `"subnet":"10.17.0.0/24"`, `"subnet":"10.17.0.0/24","gateway":"10.99.0.1"`, 1)
	if _, err := Load([]byte(bad), nil); err == nil {
		t.Fatal("the edited config should be invalid")
	}
	dc, err := LoadForDel([]byte(bad), nil)
	if dc == nil || err == nil || !strings.Contains(err.Error(), "gateway") {
		t.Fatalf("LoadForDel = %v, %v; want a usable config and the error", dc, err)
	}
	if got, err := Addresses(ctx, dc, key("edited")); err != nil || len(got) != 1 || got[0].String() != "10.17.0.2/32" {
		t.Errorf("Addresses with the lenient config = %v, %v", got, err)
	}
	if err := Release(ctx, dc, key("edited")); err != nil {
		t.Fatal(err)
	}
	if _, ok := storeFiles(t, c)["10.17.0.2"]; ok {
		t.Error("DEL with the edited config left the entry")
	}
	for _, conf := range []string{`{"name":"n","ipam":{"subnet":"10.0.0.0/24"}}`, `{"name":"n","ipam":{"type":"host-local"`, `{"name":"../x","ipam":{"type":"host-local"}}`} {
		if dc, _ := LoadForDel([]byte(conf), nil); dc != nil {
			t.Errorf("LoadForDel(%s) = %+v, want nil: nothing can have been allocated", conf, dc)
		}
	}
	if dc, _ := LoadForDel([]byte(`{"name":"n","ipam":{"type":"static","addresses":7}}`), nil); dc == nil || dc.Builtin() {
		t.Errorf("a delegated type is passed on for its own DEL: %+v", dc)
	}
}

// TestCrashAfterIndexOnlyWrite: a call that rewrites the index without
// changing the directory, and dies before commit, must leave the index
// untrusted (the state marked dirty), not trusted and wrong.
func TestCrashAfterIndexOnlyWrite(t *testing.T) {
	t.Parallel()
	c := builtin(t, map[string]any{"subnet": "10.18.0.0/24"})
	ctx := context.Background()
	if _, err := Allocate(ctx, c, key("a")); err != nil {
		t.Fatal(err)
	}
	s, err := openStore(ctx, c, bootID(), false)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.sync(); err != nil || !s.trusted {
		t.Fatalf("sync = %v, trusted %v", err, s.trusted)
	}
	s.writeRecord(&record{Owner: owner{ID: "a", IfName: "eth0"}}) // drops a's record
	// The process dies here: no commit, the lock goes with it.
	unix.Close(s.ifd)
	unix.Close(s.fd)
	s.unlock()
	if got, err := Addresses(ctx, c, key("a")); err != nil || len(got) != 1 {
		t.Fatalf("after a crash mid index write, Addresses(a) = %v, %v; want its address (rebuilt)", got, err)
	}
}
