package test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// Hostile files: a store or state file replaced by a symlink (never
// followed: the file it points at is never written, and what it says is
// never believed) or filled with garbage (never trusted blindly: the
// plugin refuses with a code or goes on safely, and nothing is handed out
// twice).

// sentinel is a file outside every store that hostile symlinks point at.
type sentinel struct {
	path string
	data []byte
	st   os.FileInfo
}

func newSentinel(t *testing.T, data []byte) *sentinel {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sentinel")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return &sentinel{path: p, data: data, st: st}
}

// intact fails t when the sentinel was written, replaced or removed.
func (s *sentinel) intact(t *testing.T) {
	t.Helper()
	st, err := os.Lstat(s.path)
	if err != nil {
		t.Fatalf("sentinel %s: %v", s.path, err)
	}
	data, _ := os.ReadFile(s.path)
	if !st.Mode().IsRegular() || !bytes.Equal(data, s.data) || st.ModTime() != s.st.ModTime() || st.Mode() != s.st.Mode() {
		t.Errorf("a symlink was followed: sentinel %s now %v %s %q", s.path, st.Mode(), st.ModTime(), data)
	}
}

// plant replaces path with a symlink to target, or with data when target
// is "".
func plant(t *testing.T, path, target string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	os.Remove(path)
	var err error
	if target != "" {
		err = os.Symlink(target, path)
	} else {
		err = os.WriteFile(path, data, 0o600)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func garbage(t *testing.T, size int) []byte {
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// ipamFirst are the first addresses each plugin's hsNode pool hands out.
var ipamFirst = map[string]netip.Addr{
	"host-local-bridge": netip.MustParseAddr("10.77.0.2"),
	"macvlan":           netip.MustParseAddr("198.51.100.10"),
}

// TestHostileStoreFiles: address entries replaced by symlinks or garbage
// stay taken and are never followed; a symlinked last_reserved_ip or lock
// is never followed.
func TestHostileStoreFiles(t *testing.T) {
	nettest.RequireRoot(t)
	for _, plugin := range ipamPlugins {
		t.Run(plugin, func(t *testing.T) {
			t.Parallel()
			n := newHsNode(t)
			n.warm(t, plugin)
			dir := filepath.Join(n.dataDir, "hs-"+plugin)
			sent := newSentinel(t, []byte("c-victim\r\neth0"))
			for _, tc := range []struct {
				name  string
				files func() []string // planted, relative to dir
				link  bool
			}{
				{"entries are symlinks", planted(4, plugin), true},
				{"entries are garbage", planted(4, plugin), false},
				{"last_reserved_ip is a symlink", func() []string { return []string{"last_reserved_ip.0"} }, true},
				{"lock is a symlink", func() []string { return []string{"lock"} }, true},
			} {
				t.Run(tc.name, func(t *testing.T) {
					full := n.full(t)
					names := tc.files()
					for _, name := range names {
						target := ""
						if tc.link {
							target = sent.path
						}
						plant(t, filepath.Join(dir, name), target, garbage(t, 64<<10))
					}
					cont, env, err := n.tryAttach(t, plugin, n.conf(plugin, nil))
					switch {
					case err != nil && (nettest.Code(err) == 999 || tc.name != "lock is a symlink"):
						t.Errorf("ADD: %v", err)
					case err == nil:
						got := nettest.Addrs(t, cont, "eth0")
						for _, name := range names {
							if len(got) > 0 && got[0].Addr().String() == name {
								t.Errorf("ADD handed out %s, whose entry is held by a hostile file", name)
							}
						}
					}
					// With its lock a symlink the store cannot be locked:
					// DEL may refuse too, with a code, until it is fixed.
					env["CNI_COMMAND"] = "DEL"
					if _, err := n.exec(t, plugin, n.conf(plugin, nil), env); err != nil && (tc.name != "lock is a symlink" || nettest.Code(err) == 999) {
						t.Errorf("DEL: %v", err)
					}
					sent.intact(t)
					for _, name := range names {
						os.Remove(filepath.Join(dir, name))
					}
					unchanged(t, "node", full, n.full(t))
				})
			}
		})
	}
}

// planted names the first count addresses of plugin's pool.
func planted(count int, plugin string) func() []string {
	return func() []string {
		var out []string
		for a, i := ipamFirst[plugin], 0; i < count; a, i = a.Next(), i+1 {
			out = append(out, a.String())
		}
		return out
	}
}

// tryAttach runs ADD for a new container; the error is the caller's.
func (n *hsNode) tryAttach(t *testing.T, plugin string, conf map[string]any, kv ...string) (*nettest.NS, map[string]string, error) {
	t.Helper()
	cont := nettest.NewNS(t)
	env := n.env(t, "ADD", cont, kv...)
	_, err := n.exec(t, plugin, conf, env)
	return cont, env, err
}

// TestHostileReservations: a host-port reservation file that is a symlink
// or garbage is never followed, and its port is never handed to a second
// attachment (refused with 101).
func TestHostileReservations(t *testing.T) {
	nettest.RequireRoot(t)
	for _, plugin := range []string{"host-local-bridge", "hostns"} {
		t.Run(plugin, func(t *testing.T) {
			t.Parallel()
			n := newHsNode(t)
			n.warm(t, plugin)
			sent := newSentinel(t, []byte(`{"network":"x","containerID":"c-victim","ifname":"eth0"}`))
			conf := n.conf(plugin, map[string]any{"runtimeConfig": map[string]any{"portMappings": portMappings(18080, 1)}})
			for _, link := range []bool{true, false} {
				full := n.full(t)
				entry := filepath.Join(n.cni.StateDir, "ports", "tcp", "18080", "any")
				target := ""
				if link {
					target = sent.path
				}
				plant(t, entry, target, garbage(t, 4096))
				_, env, err := n.tryAttach(t, plugin, conf)
				wantCode(t, err, 101, "18080")
				n.detach(t, plugin, conf, env)
				sent.intact(t)
				os.Remove(entry)
				unchanged(t, fmt.Sprintf("node (symlink %v)", link), full, n.full(t))
			}
		})
	}
}

// TestHostileTargetRecords: joinns never follows a symlinked target record
// and never believes a garbage one: the container ID stays unknown (8)
// instead of joining whatever the file names.
func TestHostileTargetRecords(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	n := newHsNode(t)
	id := n.target.Handle().ID()
	key := netconf.Key{Network: "elsewhere", ContainerID: "c-forged", IfName: "eth0"}
	forged, _ := json.Marshal(netns.Target{Network: key.Network, ContainerID: key.ContainerID, IfName: key.IfName,
		Path: n.target.Path(), Dev: id.Dev, Ino: id.Ino})
	sent := newSentinel(t, forged)
	record := filepath.Join(n.cni.StateDir, "targets", key.ContainerID, key.Hash()+".json")
	conf := n.conf("joinns", map[string]any{"target": nil})
	for _, link := range []bool{true, false} {
		full := n.full(t)
		target := ""
		if link {
			target = sent.path
		}
		plant(t, record, target, garbage(t, 512))
		cont, env, err := n.tryAttach(t, "joinns", conf, "CNI_ARGS", "TARGET="+key.ContainerID)
		wantCode(t, err, 8, key.ContainerID)
		if got := hnNSID(t, cont.Path()); got == id {
			t.Errorf("joined the namespace a hostile record names (symlink %v)", link)
		}
		n.detach(t, "joinns", conf, env)
		sent.intact(t)
		os.Remove(record)
		unchanged(t, fmt.Sprintf("node (symlink %v)", link), full, n.full(t))
	}
	// The same record written by the suite itself is followed: the
	// refusals above were for the symlink and the garbage, not the ID.
	plant(t, record, "", forged)
	cont, env, err := n.tryAttach(t, "joinns", conf, "CNI_ARGS", "TARGET="+key.ContainerID)
	if err != nil || hnNSID(t, cont.Path()) != id {
		t.Errorf("a genuine record was not followed: %v", err)
	}
	n.detach(t, "joinns", conf, env)
}

// TestHostileAttachmentRecord: the intent record of the very attachment
// being added, planted as a symlink or garbage, is replaced (never written
// through) and DEL removes the attachment completely.
func TestHostileAttachmentRecord(t *testing.T) {
	nettest.RequireRoot(t)
	for _, plugin := range ipamPlugins {
		t.Run(plugin, func(t *testing.T) {
			t.Parallel()
			n := newHsNode(t)
			n.warm(t, plugin)
			sent := newSentinel(t, []byte(`{"network":"hs-x","containerID":"c-victim","ifname":"eth0","plugin":"x"}`))
			for _, link := range []bool{true, false} {
				full := n.full(t)
				cont := nettest.NewNS(t)
				env := n.env(t, "ADD", cont)
				key := netconf.Key{Network: "hs-" + plugin, ContainerID: env["CNI_CONTAINERID"], IfName: "eth0"}
				rec := filepath.Join(n.cni.StateDir, "attachments", netconf.NetworkHash(key.Network), key.Hash()+".json")
				target := ""
				if link {
					target = sent.path
				}
				plant(t, rec, target, garbage(t, 1024))
				if _, err := n.exec(t, plugin, n.conf(plugin, nil), env); err != nil {
					t.Errorf("ADD over a hostile record (symlink %v): %v", link, err)
				}
				n.detach(t, plugin, n.conf(plugin, nil), env)
				sent.intact(t)
				unchanged(t, fmt.Sprintf("node (symlink %v)", link), full, n.full(t))
			}
		})
	}
}

// TestHostileBootID: a boot marker replaced by garbage or a symlink must
// not make the state of live attachments vanish: a host port a bridge
// container reserved is still refused (101) to a hostns attachment, and
// the first one's DEL still releases it. (A marker of an earlier boot
// empties the state; garbage is not an earlier boot.)
func TestHostileBootID(t *testing.T) {
	nettest.RequireRoot(t)
	for _, link := range []bool{false, true} {
		t.Run(fmt.Sprintf("symlink=%v", link), func(t *testing.T) {
			t.Parallel()
			n := newHsNode(t)
			n.warm(t, "host-local-bridge")
			full := n.full(t)
			sent := newSentinel(t, []byte("00000000-0000-4000-8000-000000000000"))
			ports := map[string]any{"runtimeConfig": map[string]any{"portMappings": portMappings(18081, 1)}}
			bridge, host := n.conf("host-local-bridge", ports), n.conf("hostns", ports)
			_, envA, err := n.tryAttach(t, "host-local-bridge", bridge)
			if err != nil {
				t.Fatal(err)
			}
			target := ""
			if link {
				target = sent.path
			}
			plant(t, filepath.Join(n.cni.StateDir, "boot_id"), target, garbage(t, 36))
			_, envB, err := n.tryAttach(t, "hostns", host)
			if nettest.Code(err) != 101 {
				t.Errorf("hostns ADD of host port 18081, reserved by a live bridge container, after the boot marker was damaged = %v, want code 101", err)
			}
			n.detach(t, "hostns", host, envB)
			n.detach(t, "host-local-bridge", bridge, envA)
			sent.intact(t)
			unchanged(t, "node", full, n.full(t))
		})
	}
}

// TestHostileGarbageRecordGC: one unreadable joinns target record (of an
// unknown network: its name is a hash) must not make GC of every network
// fail on every call from then on.
func TestHostileGarbageRecordGC(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	n := newHsNode(t)
	plant(t, filepath.Join(n.cni.StateDir, "targets", "c-garbage", "0123456789abcdef.json"), "", garbage(t, 256))
	for _, plugin := range hostilePlugins[1:] {
		conf := n.conf(plugin, map[string]any{"cni.dev/valid-attachments": []any{}})
		if _, err := n.exec(t, plugin, conf, map[string]string{"CNI_COMMAND": "GC", "CNI_PATH": nettest.Bins(t)}); err != nil {
			t.Errorf("%s GC with a garbage target record of another network: %v", plugin, err)
		}
	}
}

// statusEnv is the environment of a STATUS call.
func statusEnv(t *testing.T) map[string]string {
	return map[string]string{"CNI_COMMAND": "STATUS", "CNI_PATH": nettest.Bins(t)}
}

// TestHostileFullStateDisk: on a full state disk every ADD fails (5), so
// STATUS must fail too (50, naming the directory), or the runtime keeps
// the node Ready; it passes again once there is room.
func TestHostileFullStateDisk(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	n := newHsNode(t)
	disk := nettest.NewTmpfs(t, 1<<20)
	n.cni.StateDir = disk.Path
	n.warm(t, "host-local-bridge")
	disk.Fill(t)
	conf := n.conf("hostns", map[string]any{"runtimeConfig": map[string]any{"portMappings": portMappings(18082, 1)}})
	_, env, err := n.tryAttach(t, "hostns", conf)
	wantCode(t, err, 5, "no space left")
	n.detach(t, "hostns", conf, env)
	for _, plugin := range hostilePlugins[1:] {
		_, err := n.exec(t, plugin, n.conf(plugin, nil), statusEnv(t))
		if nettest.Code(err) != 50 || !strings.Contains(fmt.Sprint(err), n.cni.StateDir+" is full") {
			t.Errorf("%s STATUS on a full state disk = %v, want code 50 naming %s", plugin, err, n.cni.StateDir)
		}
	}
	disk.Free(t)
	for _, plugin := range hostilePlugins[1:] {
		if _, err := n.exec(t, plugin, n.conf(plugin, nil), statusEnv(t)); err != nil {
			t.Errorf("%s STATUS once there is room: %v", plugin, err)
		}
	}
}

// TestHostileReadOnlyStateDel: on a read-only state dir a DEL with
// nothing to remove (containerd's second DEL, a DEL without ADD) succeeds,
// while a DEL of a live attachment fails (5, saying why) and succeeds once
// the dir is writable again.
func TestHostileReadOnlyStateDel(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	n := newHsNode(t)
	disk := nettest.NewTmpfs(t, 1<<20)
	n.cni.StateDir = disk.Path
	ports := func(port int) map[string]any {
		return map[string]any{"runtimeConfig": map[string]any{"portMappings": portMappings(port, 1)}}
	}
	bridge, host := n.conf("host-local-bridge", ports(18083)), n.conf("hostns", ports(18084))
	_, gone, err := n.tryAttach(t, "host-local-bridge", bridge)
	if err != nil {
		t.Fatal(err)
	}
	n.detach(t, "host-local-bridge", bridge, gone)
	full := n.full(t)
	_, live, err := n.tryAttach(t, "host-local-bridge", n.conf("host-local-bridge", ports(18085)))
	if err != nil {
		t.Fatal(err)
	}
	disk.SetReadOnly(t, true)
	n.detach(t, "host-local-bridge", bridge, gone)
	n.detach(t, "hostns", host, n.env(t, "DEL", nettest.NewNS(t)))
	live["CNI_COMMAND"] = "DEL"
	_, err = n.exec(t, "host-local-bridge", n.conf("host-local-bridge", ports(18085)), live)
	t.Logf("DEL of a live attachment on a read-only state dir: %v", err)
	wantCode(t, err, 5, "read-only file system")
	disk.SetReadOnly(t, false)
	n.detach(t, "host-local-bridge", n.conf("host-local-bridge", ports(18085)), live)
	unchanged(t, "node", full, n.full(t))
}
