package netconf

import (
	"crypto/sha256"
	"math/rand/v2"
	"testing"
)

// TestSHA256: the local SHA-256 equals crypto/sha256 at every length
// around the block and padding boundaries, on random bytes.
func TestSHA256(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 300 {
		for range 3 {
			msg := make([]byte, n)
			for i := range msg {
				msg[i] = byte(r.UintN(256))
			}
			if got, want := sha256Sum(msg), sha256.Sum256(msg); got != want {
				t.Fatalf("len %d: %x, want %x", n, got, want)
			}
		}
	}
	// Names on disk and in the kernel must not change (values from
	// crypto/sha256 before this implementation).
	if got := (Key{Network: "n", ContainerID: "c", IfName: "eth0"}).Hash(); got != "0d9f4279c0988f30" {
		t.Errorf("Key.Hash = %q, want 0d9f4279c0988f30", got)
	}
	if got := NetworkHash("bridge"); got != "17f29b073143d8cd" {
		t.Errorf("NetworkHash = %q, want 17f29b073143d8cd", got)
	}
}
