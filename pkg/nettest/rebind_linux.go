package nettest

import (
	"path/filepath"
	"testing"

	"github.com/netdrivers/netdrivers/pkg/netns"
)

// Enter opens the namespace path shows now (after a hostns or joinns
// re-bind: the namespace it was bound onto), as a runtime that starts a
// container "in" path gets it. Do and Listen on the result run there. The
// handle is closed when t ends; the path is neither unmounted nor removed
// (Path() is only meaningful for paths under NSDir).
func Enter(t testing.TB, path string) *NS {
	t.Helper()
	h, err := netns.Open(path)
	if err != nil {
		t.Fatalf("enter %s: %v", path, err)
	}
	t.Cleanup(func() { h.Close() })
	return &NS{Name: filepath.Base(path), h: h}
}

// HostState describes a namespace for "nothing changed" comparisons beyond
// Snapshot: also policy routing rules and the nftables ruleset.
func HostState(t testing.TB, n *NS) string {
	t.Helper()
	rules, err := n.Run("ip", "rule", "show")
	if err != nil {
		t.Fatal(err)
	}
	rules6, err := n.Run("ip", "-6", "rule", "show")
	if err != nil {
		t.Fatal(err)
	}
	nft, err := n.Run("nft", "list", "ruleset")
	if err != nil {
		t.Fatal(err)
	}
	return Snapshot(t, n) + "\n" + rules + rules6 + nft
}
