package hostport

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/state"
)

// GC drops the reservations of network's attachments that are not in
// valid, continuing past errors and joining them. Other networks'
// reservations are left alone. It also sweeps reservation files of the
// network whose owner is not valid (left by a crash or a lost index).
func GC(ctx context.Context, s *state.Store, network string, valid []netconf.Key) error {
	l, err := s.Lock(ctx, lockName)
	if err != nil {
		return fmt.Errorf("lock host-port store: %w", err)
	}
	defer l.Unlock()
	keep := make(map[string]bool, len(valid))
	for _, k := range valid {
		if k.Network == network {
			keep[k.Hash()] = true
		}
	}
	names, err := s.List(ownerDir)
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		hash, ok := strings.CutSuffix(name, ".json")
		if !ok || keep[hash] {
			continue
		}
		var o owner
		if _, err := s.Get(path.Join(ownerDir, name), &o); err != nil {
			errs = append(errs, err) // whose it is cannot be told: leave it
			continue
		}
		if o.Network != network || o.key().Hash() != hash {
			continue
		}
		if err := release(s, hash, &o); err != nil {
			errs = append(errs, fmt.Errorf("release host ports of %s: %w", o.ContainerID, err))
		}
	}
	errs = append(errs, sweep(s, network, keep))
	return errors.Join(errs...)
}

// sweep removes entries of network whose owner is not kept.
func sweep(s *state.Store, network string, keep map[string]bool) error {
	var errs []error
	for _, proto := range []string{"tcp", "udp", "sctp"} {
		ports, err := s.List(path.Join(dir, proto))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, port := range ports {
			pdir := path.Join(dir, proto, port)
			tokens, err := s.List(pdir)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			for _, tok := range tokens {
				var e entry
				if _, err := s.Get(path.Join(pdir, tok), &e); err != nil || e.Network != network || keep[e.Owner] {
					continue
				}
				if err := s.Del(path.Join(pdir, tok)); err != nil {
					errs = append(errs, err)
				}
			}
			removeIfEmpty(s, pdir)
		}
	}
	return errors.Join(errs...)
}

func removeIfEmpty(s *state.Store, rel string) {
	if names, err := s.List(rel); err == nil && len(names) == 0 {
		_ = s.Del(rel)
	}
}
