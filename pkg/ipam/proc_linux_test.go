package ipam

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/netdrivers/netdrivers/pkg/netconf"
)

// The test binary doubles as a helper process that runs our allocator, so
// that tests can race real processes (ours and the reference binary's) on
// one store, and kill them mid-call.
const helperEnv = "NETDRIVERS_IPAM_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helperMain(mode))
	}
	os.Exit(m.Run())
}

// helperMain: IPAM_CONF holds the netconf; args are container IDs.
// "add" allocates each and prints "id ip,ip"; "del" releases each; "loop"
// allocates and releases its IDs until killed.
func helperMain(mode string) int {
	log.SetOutput(io.Discard)
	c, err := Load([]byte(os.Getenv("IPAM_CONF")), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx := context.Background()
	ids := flagArgs()
	for n := 0; ; n++ {
		for _, id := range ids {
			k := netconf.Key{Network: c.network, ContainerID: id, IfName: "eth0"}
			switch mode {
			case "add", "loop":
				res, err := Allocate(ctx, c, k)
				if err != nil {
					fmt.Fprintln(os.Stderr, id, err)
					return 1
				}
				if mode == "add" {
					fmt.Println(id, addrStrings(res))
				} else {
					os.Stdout.Write([]byte{'+'}) // progress, for the killer
				}
			}
			if mode == "del" || mode == "loop" {
				if err := Release(ctx, c, k); err != nil {
					fmt.Fprintln(os.Stderr, id, err)
					return 1
				}
				if mode == "loop" {
					os.Stdout.Write([]byte{'-'})
				}
			}
		}
		if mode != "loop" {
			return 0
		}
	}
}

func flagArgs() []string {
	var out []string
	for _, a := range os.Args[1:] {
		if !strings.HasPrefix(a, "-test.") {
			out = append(out, a)
		}
	}
	return out
}

// helper starts our allocator in a process of its own.
func helper(t *testing.T, c *Config, mode string, ids ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^$"}, ids...)...)
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, "IPAM_CONF="+string(c.stdin))
	return cmd
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strconv.Itoa(i)
	}
	return out
}

// TestProcessesConcurrent: 16 processes allocate 8 addresses each at
// once, then release them at once. No address twice, none lost, none left.
func TestProcessesConcurrent(t *testing.T) {
	t.Parallel()
	c := builtin(t, map[string]any{"subnet": "10.30.0.0/24"})
	run := func(mode string) []string {
		var mu sync.Mutex
		var lines []string
		var wg sync.WaitGroup
		for p := range 16 {
			wg.Go(func() {
				out, err := helper(t, c, mode, ids(fmt.Sprintf("p%d-", p), 8)...).Output()
				if err != nil {
					t.Errorf("helper %d %s: %v", p, mode, err)
				}
				mu.Lock()
				lines = append(lines, strings.Fields(string(out))...)
				mu.Unlock()
			})
		}
		wg.Wait()
		return lines
	}
	run("add")
	files := storeFiles(t, c)
	seen := map[string]string{}
	for name, content := range files {
		if strings.HasPrefix(name, lastIPPrefix) {
			continue
		}
		if prev, dup := seen[content]; dup {
			t.Errorf("%q holds %s and %s", content, prev, name)
		}
		seen[content] = name
	}
	if len(seen) != 128 {
		t.Fatalf("%d entries after 128 concurrent allocations", len(seen))
	}
	ctx := context.Background()
	for content, ip := range seen {
		id, _, _ := strings.Cut(content, "\r\n")
		if got, err := Addresses(ctx, c, key(id)); err != nil || len(got) != 1 || got[0].Addr().String() != ip {
			t.Errorf("index for %s = %v, %v; want %s", id, got, err, ip)
		}
	}
	run("del")
	for name := range storeFiles(t, c) {
		if !strings.HasPrefix(name, lastIPPrefix) {
			t.Errorf("left after concurrent DEL: %s", name)
		}
	}
}

// TestKilledMidCall kills an allocating process at many moments. The
// store must stay readable: every entry complete, the index consistent
// with the entries, and GC able to clear everything.
func TestKilledMidCall(t *testing.T) {
	t.Parallel()
	c := builtin(t, map[string]any{"subnet": "10.31.0.0/24"})
	ctx := context.Background()
	for round := range 25 {
		cmd := helper(t, c, "loop", ids(fmt.Sprintf("k%d-", round), 3)...)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Let it finish a varying number of calls, then kill it in the next.
		if _, err := io.ReadFull(out, make([]byte, 1+round%6)); err != nil {
			t.Fatal(err)
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		for name, content := range storeFiles(t, c) {
			if strings.HasPrefix(name, lastIPPrefix) {
				continue
			}
			o, err := parseEntry([]byte(content))
			if err != nil || content != string(o.content()) {
				t.Fatalf("round %d: entry %s = %q after a kill: partial or garbage", round, name, content)
			}
			got, err := Addresses(ctx, c, netconf.Key{Network: c.network, ContainerID: o.ID, IfName: o.IfName})
			if err != nil || len(got) == 0 {
				t.Fatalf("round %d: the index lost %s of %s: %v, %v", round, name, o, got, err)
			}
		}
	}
	if err := GC(ctx, c, nil); err != nil {
		t.Fatal(err)
	}
	for name := range storeFiles(t, c) {
		if !strings.HasPrefix(name, lastIPPrefix) {
			t.Errorf("left after GC: %s", name)
		}
	}
}
