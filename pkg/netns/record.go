package netns

import (
	"context"
	"errors"
	"fmt"
	"log"
	"path"
	"strings"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/state"
)

// Target records tell joinns where an attachment's container lives, so a
// container ID can name the namespace to join. Every plugin that gives a
// container a network (host-local-bridge, macvlan, hostns, joinns) calls
// Record at the end of a successful ADD, Forget on DEL and GCRecords on
// GC. Layout: <state>/targets/<container ID>/<key hash>.json.

var (
	// ErrTargetUnknown: no attachment of the container is recorded.
	ErrTargetUnknown = cnierr.New(cnierr.InvalidNetNS, "target container has no recorded attachment")
	// ErrTargetGone: the recorded namespace is no longer at its path.
	ErrTargetGone = cnierr.New(cnierr.InvalidNetNS, "target container's attachment is gone")
)

// Target is one recorded attachment's namespace.
type Target struct {
	Network     string `json:"network"`
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
	Path        string `json:"netns"`
	Dev         uint64 `json:"dev"`
	Ino         uint64 `json:"ino"`
}

// Key is the recorded attachment's key.
func (t *Target) Key() netconf.Key {
	return netconf.Key{Network: t.Network, ContainerID: t.ContainerID, IfName: t.IfName}
}

func targetDir(containerID string) string { return path.Join("targets", containerID) }

func targetPath(key netconf.Key) string {
	return path.Join(targetDir(key.ContainerID), key.Hash()+".json")
}

// Record notes that key's container lives in h (h.Path and its
// device+inode). Call it after ADD has succeeded, e.g.
// netns.Record(store, r.Key, r.ContNS).
func Record(s *state.Store, key netconf.Key, h *Handle) error {
	return RecordPath(s, key, h.Path, h.ID())
}

// RecordPath is Record for a path that will hold namespace id (hostns and
// joinns record before they re-bind the path onto id).
func RecordPath(s *state.Store, key netconf.Key, path string, id ID) error {
	t := Target{Network: key.Network, ContainerID: key.ContainerID, IfName: key.IfName, Path: path, Dev: id.Dev, Ino: id.Ino}
	if err := s.Put(targetPath(key), &t); err != nil {
		return fmt.Errorf("record namespace of %s: %w", key.ContainerID, err)
	}
	return nil
}

// Forget drops key's record; gone is success.
func Forget(s *state.Store, key netconf.Key) error {
	if err := s.Del(targetPath(key)); err != nil {
		return fmt.Errorf("forget namespace of %s: %w", key.ContainerID, err)
	}
	_ = s.Del(targetDir(key.ContainerID)) // only succeeds once empty
	return nil
}

// Lookup opens the namespace of a recorded attachment of containerID,
// checking that the recorded path still holds the recorded namespace
// (device+inode), so a reused path or a deleted container is never joined.
// It fails with ErrTargetUnknown or ErrTargetGone.
func Lookup(s *state.Store, containerID string) (*Handle, *Target, error) {
	if err := netconf.ValidateContainerID(containerID); err != nil {
		return nil, nil, fmt.Errorf("target %q: %w", containerID, ErrTargetUnknown)
	}
	names, err := s.List(targetDir(containerID))
	if err != nil {
		return nil, nil, fmt.Errorf("look up target %s: %w", containerID, err)
	}
	var why []string
	for _, n := range names {
		var t Target
		if _, err := s.Get(path.Join(targetDir(containerID), n), &t); err != nil || t.ContainerID != containerID {
			continue
		}
		h, err := Open(t.Path)
		if err != nil {
			why = append(why, fmt.Sprintf("%s (network %q): %v", t.Path, t.Network, err))
			continue
		}
		if h.ID() != (ID{Dev: t.Dev, Ino: t.Ino}) {
			h.Close()
			why = append(why, fmt.Sprintf("%s (network %q) now holds another namespace", t.Path, t.Network))
			continue
		}
		return h, &t, nil
	}
	if len(why) > 0 {
		return nil, nil, fmt.Errorf("%w: container %s: %s", ErrTargetGone, containerID, strings.Join(why, "; "))
	}
	return nil, nil, fmt.Errorf("%w: container %s is not attached on this node by a netdrivers plugin", ErrTargetUnknown, containerID)
}

// GCRecords drops the records of network's attachments not in valid,
// continuing past errors.
func GCRecords(_ context.Context, s *state.Store, network string, valid []netconf.Key) error {
	keep := make(map[netconf.Key]bool, len(valid))
	for _, k := range valid {
		keep[k] = true
	}
	ids, err := s.List("targets")
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		names, err := s.List(targetDir(id))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, n := range names {
			var t Target
			rel := path.Join(targetDir(id), n)
			if _, err := s.Get(rel, &t); err != nil {
				// Unreadable: which network it belongs to is unknown, so
				// it is not this GC's to judge, nor a reason to fail it.
				log.Printf("GC: skipping target record %s: %v", rel, err)
				continue
			}
			if t.Network != network || keep[t.Key()] {
				continue
			}
			if err := s.Del(rel); err != nil {
				errs = append(errs, err)
			}
		}
		_ = s.Del(targetDir(id))
	}
	return errors.Join(errs...)
}
