package main

import (
	"context"

	"github.com/netdrivers/netdrivers/pkg/cniplugin"
)

// del changes nothing, in both modes. The reference loopback sets lo down;
// this one does not: the namespace may be shared (joinns joiners, a path
// hostns re-bound onto the node) and lo is what keeps 127.0.0.1 working
// there. The runtime discards the namespace anyway.
func del(context.Context, *cniplugin.Request[mode]) error { return nil }
