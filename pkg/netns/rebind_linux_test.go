package netns_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/nettest"
	"github.com/netdrivers/netdrivers/pkg/state"
)

func TestRebind(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	cont, target, peer := nettest.NewNS(t), nettest.NewNS(t), nettest.NewNS(t)
	nettest.NewVeth(t, target, "tgt0", "198.51.100.1/24", peer, "peer0", "198.51.100.2/24")
	pin, err := netns.OpenPin(cont.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer pin.Close()
	if pin.ID() != cont.Handle().ID() {
		t.Fatalf("pin ID %v, want %v", pin.ID(), cont.Handle().ID())
	}
	s, err := state.OpenAt(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	key := netconf.Key{Network: "n", ContainerID: "c", IfName: "eth0"}
	if err := pin.Rebind(target.Handle(), s, key); err != nil {
		t.Fatal(err)
	}
	if err := netns.Repair(s, key); err != nil { // no marker left: nothing to do
		t.Fatal(err)
	}
	h, err := netns.Open(cont.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if h.ID() != target.Handle().ID() {
		t.Fatalf("%s shows %v after Rebind, want the target %v", cont.Path(), h.ID(), target.Handle().ID())
	}
	if _, err := h.Link("tgt0"); err != nil {
		t.Errorf("the target's link is not visible through the re-bound path: %v", err)
	}
	// Once re-bound the path holds a configured namespace: a second
	// re-bind is refused.
	if _, err := netns.OpenPin(cont.Path()); !errors.Is(err, netns.ErrRebind) {
		t.Errorf("OpenPin of a re-bound path = %v, want ErrRebind", err)
	}
}

// TestRepairHalfDoneRebind: a re-bind killed between its unmount and its
// bind left the path a plain file and its marker behind; Repair pins a
// fresh namespace there and drops the marker. A path that shows a
// namespace is left alone.
func TestRepairHalfDoneRebind(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	cont, intact, stacked, target := nettest.NewNS(t), nettest.NewNS(t), nettest.NewNS(t), nettest.NewNS(t)
	s, err := state.OpenAt(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	key := netconf.Key{Network: "n", ContainerID: "c", IfName: "eth0"}
	before := intact.Handle().ID()
	for _, p := range []string{cont.Path(), intact.Path(), stacked.Path()} {
		k := key
		k.ContainerID += filepath.Base(p)
		if err := s.Put("rebinding."+k.Hash()+".json", map[string]string{"path": p, "network": k.Network}); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Unmount(cont.Path(), unix.MNT_DETACH); err != nil { // the fallback's crash
		t.Fatal(err)
	}
	// The atomic switch's crash: target mounted beneath, the pin still on top.
	tree, err := unix.OpenTree(unix.AT_FDCWD, target.Path(), unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(tree)
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, stacked.Path(), unix.MOVE_MOUNT_F_EMPTY_PATH|0x200); err != nil {
		t.Skipf("no MOVE_MOUNT_BENEATH here: %v", err)
	}
	if err := netns.RepairGC(context.Background(), s, "n", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := netns.IDOf(cont.Path()); err != nil {
		t.Errorf("path still shows no namespace after Repair: %v", err)
	}
	if id, err := netns.IDOf(intact.Path()); err != nil || id != before {
		t.Errorf("an intact path was changed: %v %v", id, err)
	}
	if id, err := netns.IDOf(stacked.Path()); err != nil || id != target.Handle().ID() {
		t.Errorf("stacked path shows %v (%v), want the switch finished onto %v", id, err, target.Handle().ID())
	}
	if got := nettest.Mounts(t, stacked.Path()); len(got) != 1 {
		t.Errorf("mounts at the stacked path after repair: %v", got)
	}
	names, _ := s.List(".")
	for _, n := range names {
		if strings.HasPrefix(n, "rebinding") {
			t.Errorf("marker left: %s", n)
		}
	}
}

func TestOpenPinRefusals(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	configured, other, busy := nettest.NewNS(t), nettest.NewNS(t), nettest.NewNS(t)
	nettest.NewVeth(t, configured, "eth0", "", other, "peer0", "")
	var cmd *exec.Cmd
	busy.MustDo(t, func() error {
		cmd = exec.Command("sleep", "30")
		return cmd.Start()
	})
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, nil, 0o644)
	link := filepath.Join(dir, "link")
	os.Symlink(other.Path(), link)
	cases := []struct{ name, path, want string }{
		{"proc path", "/proc/self/ns/net", "/proc path"},
		{"pid proc path", "/proc/1/ns/net", "nerdctl"},
		{"relative", "run/netns/x", "absolute"},
		{"missing", "/run/netns/nd-missing-" + nettest.RandHex(6), "no such file"},
		{"regular file", plain, "not a network namespace"},
		{"directory", dir, "not a network namespace"},
		{"symlink", link, "symbolic link"},
		{"interfaces", configured.Path(), "eth0 (veth)"},
		{"process", busy.Path(), "sleep (pid"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := netns.OpenPin(tc.path)
			if err == nil {
				p.Close()
				t.Fatalf("OpenPin(%s) succeeded", tc.path)
			}
			if !errors.Is(err, netns.ErrRebind) || cnierr.CodeOf(err) != cnierr.Rebind {
				t.Errorf("err = %v (code %d), want ErrRebind (103)", err, cnierr.CodeOf(err))
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

func TestRecordLookup(t *testing.T) {
	nettest.RequireRoot(t)
	root := t.TempDir()
	t.Setenv(state.EnvRoot, root)
	s, err := state.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	a, b := nettest.NewNS(t), nettest.NewNS(t)
	ka := netconf.Key{Network: "n1", ContainerID: "ca", IfName: "eth0"}
	kb := netconf.Key{Network: "n2", ContainerID: "cb", IfName: "eth0"}
	for k, ns := range map[netconf.Key]*nettest.NS{ka: a, kb: b} {
		if err := netns.Record(s, k, ns.Handle()); err != nil {
			t.Fatal(err)
		}
	}
	h, tg, err := netns.Lookup(s, "ca")
	if err != nil {
		t.Fatal(err)
	}
	if h.ID() != a.Handle().ID() || tg.Path != a.Path() || tg.Key() != ka {
		t.Errorf("Lookup(ca) = %v %+v, want %s", h.ID(), tg, a.Path())
	}
	h.Close()
	for _, bad := range []string{"nobody", "../etc", ""} {
		if _, _, err := netns.Lookup(s, bad); !errors.Is(err, netns.ErrTargetUnknown) {
			t.Errorf("Lookup(%q) = %v, want ErrTargetUnknown", bad, err)
		}
	}
	// The namespace goes away behind the record's back: the record no
	// longer resolves, and never to whatever the path holds next.
	if err := b.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := netns.Lookup(s, "cb"); !errors.Is(err, netns.ErrTargetGone) {
		t.Errorf("Lookup of a removed namespace = %v, want ErrTargetGone", err)
	}
	// GC of n1 keeps n2's record; GC of n2 with nothing valid drops it.
	if err := netns.GCRecords(context.Background(), s, "n1", []netconf.Key{ka}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := netns.Lookup(s, "ca"); err != nil {
		t.Errorf("GC dropped a valid record: %v", err)
	}
	if err := netns.GCRecords(context.Background(), s, "n2", nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := netns.Lookup(s, "cb"); !errors.Is(err, netns.ErrTargetUnknown) {
		t.Errorf("after GC Lookup(cb) = %v, want ErrTargetUnknown", err)
	}
	for range 2 {
		if err := netns.Forget(s, ka); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "targets", "ca")); !os.IsNotExist(err) {
		t.Errorf("Forget left the container's directory: %v", err)
	}
}

// TestOpenPinWaitsForTransientTask: a process passing through the
// namespace (as containerd's concurrent loopback plugin does) is waited
// for, not mistaken for a container.
func TestOpenPinWaitsForTransientTask(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	n := nettest.NewNS(t)
	cmd := exec.Command("nsenter", "--net="+n.Path(), "sleep", "0.05")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	want := fmt.Sprintf("net:[%d]", n.Handle().ID().Ino)
	nettest.Eventually(t, 2*time.Second, "the visitor enters", func() error {
		if got, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)); got != want {
			return fmt.Errorf("in %s", got)
		}
		return nil
	})
	p, err := netns.OpenPin(n.Path())
	if err != nil {
		t.Fatalf("OpenPin with a visitor leaving within 50 ms: %v", err)
	}
	p.Close()
}
