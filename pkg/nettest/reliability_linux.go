package nettest

import (
	"bufio"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

var counters = regexp.MustCompile(`counter packets [0-9]+ bytes [0-9]+`)

// NodeState describes everything of a node namespace that a plugin may
// touch outside its containers: links, addresses and routes (Snapshot),
// policy routing rules, the nftables ruleset (one set element per line) and
// every iptables table, legacy and nft, without counters or timestamps.
// Compare two of them with DiffLines.
func NodeState(t testing.TB, n *NS) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(Snapshot(t, n))
	for _, args := range [][]string{{"ip", "rule", "show"}, {"ip", "-6", "rule", "show"}} {
		b.WriteString("\n--- " + strings.Join(args, " ") + "\n")
		b.WriteString(n.MustRun(t, args[0], args[1:]...))
	}
	b.WriteString("\n--- nft\n")
	// iptables-nft rules carry counters, which change with traffic.
	out := counters.ReplaceAllString(n.MustRun(t, "nft", "list", "ruleset"), "counter")
	// One set element per line, so that one element more or less is one line.
	b.WriteString(strings.NewReplacer("elements = { ", "elements = {\n", ", ", ",\n", " }", "\n}").Replace(out))
	for _, cmd := range []string{"iptables-save", "ip6tables-save", "iptables-legacy-save", "ip6tables-legacy-save"} {
		if _, err := exec.LookPath(cmd); err != nil {
			continue
		}
		b.WriteString("\n--- " + cmd + "\n")
		for _, line := range strings.Split(n.MustRun(t, cmd), "\n") {
			if strings.HasPrefix(line, "#") {
				continue // timestamps
			}
			if i := strings.Index(line, " ["); strings.HasPrefix(line, ":") && i > 0 {
				line = line[:i] // chain counters change with traffic
			}
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// DiffLines lists the lines that after has more often than before ("+ ")
// and fewer times ("- "), sorted; "" when both hold the same lines.
func DiffLines(before, after string) string {
	count := func(s string) map[string]int {
		m := map[string]int{}
		for _, l := range strings.Split(s, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				m[l]++
			}
		}
		return m
	}
	b, a := count(before), count(after)
	var out []string
	for l, n := range a {
		if n > b[l] {
			out = append(out, "+ "+l)
		}
	}
	for l, n := range b {
		if n > a[l] {
			out = append(out, "- "+l)
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// StateFiles lists the files of a plugin state dir (relative, sorted)
// besides what exists regardless of attachments: the boot marker and the
// lock files.
func StateFiles(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() || rel == "boot_id" || strings.HasPrefix(rel, "locks/") {
			return nil
		}
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatalf("walk state dir %s: %v", dir, err)
	}
	sort.Strings(out)
	return out
}

// StoreEntries lists the address entries of one network's host-local
// store (<dataDir>/<network>): the files named as an IP address.
func StoreEntries(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatalf("read store %s: %v", dir, err)
	}
	var out []string
	for _, e := range entries {
		if _, err := netip.ParseAddr(e.Name()); err == nil {
			out = append(out, e.Name())
		}
	}
	return out
}

// Mounts lists the mounts of this process's mount namespace whose mount
// point is one of paths or lies under one of them, as "<point> <fstype>
// <root>" lines of /proc/self/mountinfo.
func Mounts(t testing.TB, paths ...string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent maj:min root point options... - fstype source superopts
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) {
			continue
		}
		point := fields[4]
		for _, p := range paths {
			if point == p || strings.HasPrefix(point, strings.TrimSuffix(p, "/")+"/") {
				out = append(out, point+" "+fields[sep+1]+" "+fields[3])
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}
