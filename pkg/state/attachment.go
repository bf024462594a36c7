package state

import (
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/netdrivers/netdrivers/pkg/netconf"
)

// Attachment is the intent record a plugin writes before its first change
// on ADD and removes after its last step on DEL, so that DEL and GC can
// undo a half-done ADD (a crash, a kill -9) from the key alone.
type Attachment struct {
	Network     string            `json:"network"`
	ContainerID string            `json:"containerID"`
	IfName      string            `json:"ifname"`
	Plugin      string            `json:"plugin"`
	NetNS       string            `json:"netns,omitempty"`
	Objects     map[string]string `json:"objects,omitempty"` // plugin-specific names (host veth, bridge...)
}

// Key is the record's attachment key.
func (a *Attachment) Key() netconf.Key {
	return netconf.Key{Network: a.Network, ContainerID: a.ContainerID, IfName: a.IfName}
}

func attachmentPath(network, hash string) string {
	return path.Join("attachments", netconf.NetworkHash(network), hash+".json")
}

// PutAttachment writes key's record.
func (s *Store) PutAttachment(a *Attachment) error {
	return s.Put(attachmentPath(a.Network, a.Key().Hash()), a)
}

// GetAttachment reads key's record; nil when there is none.
func (s *Store) GetAttachment(key netconf.Key) (*Attachment, error) {
	var a Attachment
	ok, err := s.Get(attachmentPath(key.Network, key.Hash()), &a)
	if err != nil || !ok {
		return nil, err
	}
	if a.Key() != key {
		return nil, fmt.Errorf("attachment record of %v holds %v: %w", key, a.Key(), ErrCorrupt)
	}
	return &a, nil
}

// DelAttachment removes key's record; gone is success.
func (s *Store) DelAttachment(key netconf.Key) error {
	return s.Del(attachmentPath(key.Network, key.Hash()))
}

// Attachments lists the records of a network. Unreadable records are
// returned as errors next to the good ones, never dropped silently.
func (s *Store) Attachments(network string) ([]*Attachment, error) {
	dir := path.Join("attachments", netconf.NetworkHash(network))
	names, err := s.List(dir)
	if err != nil {
		return nil, err
	}
	var out []*Attachment
	var errs []error
	for _, n := range names {
		if !strings.HasSuffix(n, ".json") {
			continue
		}
		var a Attachment
		if _, err := s.Get(path.Join(dir, n), &a); err != nil {
			errs = append(errs, err)
			continue
		}
		if a.Network != network || a.Key().Hash()+".json" != n {
			errs = append(errs, fmt.Errorf("%s/%s: names another attachment: %w", dir, n, ErrCorrupt))
			continue
		}
		out = append(out, &a)
	}
	return out, errors.Join(errs...)
}
