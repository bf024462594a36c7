//go:build runtimes

package runtimes

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/netdrivers/netdrivers/pkg/nettest"
)

// page is what the test images' httpd serves (/www/index.html).
const page = "netdrivers"

// fetch is the busybox command that prints url's body (busybox 1.35's
// wget -T crashes, hence timeout).
func fetch(url string) []string { return []string{"timeout", "5", "wget", "-q", "-O", "-", url} }

// httpGet fetches url with a connection made inside ns.
func httpGet(ns *nettest.NS, url string) (string, error) {
	dial := func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = ns.Do(func() error {
			c, err = (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	cl := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
	resp, err := cl.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return strings.TrimSpace(string(b)), nil
}

// wantPage asserts that url, fetched from ns, serves the test page within
// a few seconds.
func wantPage(t *testing.T, ns *nettest.NS, url string) {
	t.Helper()
	nettest.Eventually(t, 5*time.Second, "GET "+url+" from "+ns.Name, func() error {
		got, err := httpGet(ns, url)
		if err == nil && got != page {
			err = fmt.Errorf("served %q, want %q", got, page)
		}
		return err
	})
}

// wantIn asserts that addr lies in prefix.
func wantIn(t *testing.T, addr, prefix string) {
	t.Helper()
	a, err := netip.ParseAddr(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	if !netip.MustParsePrefix(prefix).Contains(a) {
		t.Fatalf("address %s is not in %s", addr, prefix)
	}
}

var counters = regexp.MustCompile(`counter packets \d+ bytes \d+`)

// nodeState describes what the plugins may leave on the node: the host
// namespace's links, addresses and routes, its nftables and iptables
// rule sets, and the names of the files in the given directories (the
// address store, the state dir). Two equal states mean nothing leaked.
func nodeState(t *testing.T, host *nettest.NS, dirs ...string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(nettest.Snapshot(t, host))
	nft, err := host.Run("nft", "list", "ruleset")
	if err != nil {
		t.Fatal(err)
	}
	b.WriteString("\n== nftables\n" + counters.ReplaceAllString(nft, "counter"))
	for _, save := range []string{"iptables-legacy-save", "iptables-nft-save"} {
		out, err := host.Run(save)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString("\n== " + save + "\n" + stripSaveNoise(out))
	}
	for _, d := range dirs {
		b.WriteString("\n== files in " + d + "\n" + strings.Join(files(t, d), "\n"))
	}
	return b.String()
}

// stripSaveNoise drops the comment lines and packet counters of
// iptables-save output, which change without any rule changing.
func stripSaveNoise(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasPrefix(l, ":") {
			if i := strings.Index(l, " ["); i > 0 {
				l = l[:i]
			}
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

// files lists the paths below d, relative to it (absent d: none). The
// address store's index buckets (<network>/.netdrivers/b-xx) are kept by
// design once made (at most 256, rewritten in place) and are listed only
// while they hold a record.
func files(t *testing.T, d string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(d, p)
		if rel == "." || (indexBucket.MatchString(rel) && noRecords(t, p)) {
			return nil
		}
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

var indexBucket = regexp.MustCompile(`(^|/)\.netdrivers/b-[0-9a-f]{2}$`)

// noRecords reports whether an index bucket holds no record: nothing but
// its "#" header line and newline padding.
func noRecords(t *testing.T, p string) bool {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

// wantNoMention asserts that no file below dirs names any of ids (the
// removed containers): nothing of theirs stays in a store or state file.
func wantNoMention(t *testing.T, dirs []string, ids ...string) {
	t.Helper()
	for _, d := range dirs {
		for _, rel := range files(t, d) {
			p := filepath.Join(d, rel)
			if st, err := os.Stat(p); err != nil || st.IsDir() {
				continue
			}
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range ids {
				if strings.Contains(rel, id) || strings.Contains(string(b), id) {
					t.Errorf("%s still names removed container %.12s", p, id)
				}
			}
		}
	}
}

// wantSameState fails t with a line diff when the node state changed.
func wantSameState(t *testing.T, what, before, after string) {
	t.Helper()
	if before == after {
		return
	}
	b, a := lineSet(before), lineSet(after)
	var diff []string
	for l := range a {
		if !b[l] {
			diff = append(diff, "+ "+l)
		}
	}
	for l := range b {
		if !a[l] {
			diff = append(diff, "- "+l)
		}
	}
	sort.Strings(diff)
	t.Errorf("%s left the node changed (+ appeared, - vanished):\n%s", what, strings.Join(diff, "\n"))
}

func lineSet(s string) map[string]bool {
	m := map[string]bool{}
	for _, l := range strings.Split(s, "\n") {
		m[l] = true
	}
	return m
}

// cacheDir is libcni's result cache, which containerd 1.6 and Podman 4.3
// cannot move: they write there on ADD and remove the entry on DEL.
const cacheDir = "/var/lib/cni/results"

// cacheEntries lists the result cache (a baseline: entries a crashed
// earlier run left are not this run's).
func cacheEntries() map[string]bool {
	m := map[string]bool{}
	ents, _ := os.ReadDir(cacheDir)
	for _, e := range ents {
		m[e.Name()] = true
	}
	return m
}

// noCacheLeft asserts that the cache holds no entry of network beyond
// the baseline.
func noCacheLeft(t *testing.T, base map[string]bool, network string) {
	t.Helper()
	for e := range cacheEntries() {
		if strings.HasPrefix(e, network+"-") && !base[e] {
			t.Errorf("libcni result cache still holds %s/%s", cacheDir, e)
		}
	}
}
