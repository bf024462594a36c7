// Package soak is the soak suite (issue 8): 16 concurrent workers doing
// random ADD/CHECK/DEL (and GC, STATUS, traffic) over every plugin and
// several networks in a throwaway node namespace, checking while running
// that no two live attachments hold the same address, and afterwards
// that nothing leaked. The suite is behind the "soak" build tag, so that
// plain `go test ./...` does not run it; scripts/soak.sh builds and runs
// it with a bounded number of operations.
package soak
