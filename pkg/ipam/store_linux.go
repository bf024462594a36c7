package ipam

import (
	"context"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/netconf"
)

var errTODO = cnierr.New(cnierr.Internal, "built-in host-local: not yet implemented")

func allocate(ctx context.Context, c *Config, key netconf.Key) (*current.Result, error) {
	return nil, errTODO
}
func release(ctx context.Context, c *Config, key netconf.Key) error { return errTODO }
func addresses(ctx context.Context, c *Config, key netconf.Key) ([]netip.Prefix, error) {
	return nil, errTODO
}
func check(ctx context.Context, c *Config, key netconf.Key, prev *current.Result) error {
	return errTODO
}
func gc(ctx context.Context, c *Config, valid []types.GCAttachment) error { return errTODO }
func status(c *Config) error                                              { return errTODO }
