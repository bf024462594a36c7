// Package hostport is the host-wide store of host-port reservations that
// every netdrivers plugin of a node shares (host-local-bridge's published
// ports, hostns's advisory ports). A reservation belongs to one attachment
// (network, container ID, ifname); overlapping ones are refused with
// ErrPortInUse (code 101), naming the port, the protocol and the owner.
//
// Layout under the state root, all changed under one short lock:
//
//	ports/owners/<key hash>.json        the attachment and its ports (written first)
//	ports/<proto>/<port>/<host IP|any>  one file per reserved socket, naming its owner
//
// A conflict check reads only the directory of the requested port, so
// Reserve costs O(ports requested), whatever the number of reservations.
package hostport

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path"
	"strconv"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/jsonlite"
	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/safefile"
	"github.com/netdrivers/netdrivers/pkg/state"
	"github.com/netdrivers/netdrivers/pkg/undo"
)

// ErrPortInUse is returned when a host port is reserved by another
// attachment or a host process listens there.
var ErrPortInUse = cnierr.New(cnierr.PortInUse, "host port already in use")

const (
	dir      = "ports"
	ownerDir = "ports/owners"
	lockName = "ports"
	anyToken = "any" // the file name of a reservation without host IP
)

// portRec is a reservation as stored.
type portRec struct {
	HostPort      uint16 `json:"hostPort"`
	ContainerPort uint16 `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

// owner is the per-attachment index: what Release and GC remove.
type owner struct {
	Network     string    `json:"network"`
	ContainerID string    `json:"containerID"`
	IfName      string    `json:"ifname"`
	Ports       []portRec `json:"ports"`
}

// entry is the content of one reserved socket's file.
type entry struct {
	Network     string  `json:"network"`
	ContainerID string  `json:"containerID"`
	IfName      string  `json:"ifname"`
	Owner       string  `json:"owner"` // key hash
	Port        portRec `json:"port"`
}

func (o *owner) key() netconf.Key {
	return netconf.Key{Network: o.Network, ContainerID: o.ContainerID, IfName: o.IfName}
}

func (e *entry) key() netconf.Key {
	return netconf.Key{Network: e.Network, ContainerID: e.ContainerID, IfName: e.IfName}
}

func toRec(p netconf.Port) portRec {
	r := portRec{HostPort: p.HostPort, ContainerPort: p.ContainerPort, Protocol: p.Protocol}
	if p.HostIP.IsValid() {
		r.HostIP = p.HostIP.String()
	}
	return r
}

func (r portRec) port() (netconf.Port, error) {
	p := netconf.Port{HostPort: r.HostPort, ContainerPort: r.ContainerPort, Protocol: r.Protocol}
	if r.HostIP != "" {
		ip, err := netip.ParseAddr(r.HostIP)
		if err != nil {
			return p, fmt.Errorf("host IP %q: %w", r.HostIP, state.ErrCorrupt)
		}
		p.HostIP = ip
	}
	switch {
	case p.HostPort == 0, p.Protocol != "tcp" && p.Protocol != "udp" && p.Protocol != "sctp":
		return p, fmt.Errorf("reservation %+v: %w", r, state.ErrCorrupt)
	}
	return p, nil
}

func ownerPath(key netconf.Key) string { return path.Join(ownerDir, key.Hash()+".json") }

func portDir(p netconf.Port) string {
	return path.Join(dir, p.Protocol, strconv.Itoa(int(p.HostPort)))
}

func token(p netconf.Port) string {
	if !p.HostIP.IsValid() {
		return anyToken
	}
	return p.HostIP.String()
}

func entryPath(p netconf.Port) string { return path.Join(portDir(p), token(p)) }

// Reserve records ports for key, all-or-nothing, in the store shared by
// every plugin of the host. It fails with ErrPortInUse naming port,
// protocol and owner when another attachment holds an overlapping
// reservation (netconf.Port.Overlaps) or, when probe is true, a socket of
// the calling thread's network namespace (the node's) is bound there.
// Ports key already holds are kept; a second Reserve adds to the first.
func Reserve(ctx context.Context, s *state.Store, key netconf.Key, ports []netconf.Port, probe bool) (err error) {
	if len(ports) == 0 {
		return nil
	}
	l, err := s.Lock(ctx, lockName)
	if err != nil {
		return fmt.Errorf("lock host-port store: %w", err)
	}
	defer l.Unlock()
	prev, err := readOwner(s, key)
	if err != nil {
		return err
	}
	var fresh []netconf.Port
	for _, p := range ports {
		mine, err := conflict(s, key, p)
		if err != nil {
			return err
		}
		if !mine {
			fresh = append(fresh, p)
		}
	}
	if probe {
		for _, p := range fresh {
			if err := Probe(p); err != nil {
				return err
			}
		}
	}
	return write(s, key, prev, fresh)
}

// write stores the index (first, so a crash never leaves a reservation
// Release cannot find) and then one file per fresh port, undoing both on
// failure.
func write(s *state.Store, key netconf.Key, prev *owner, fresh []netconf.Port) (err error) {
	if len(fresh) == 0 {
		return nil
	}
	var u undo.Stack
	defer u.OnError(&err)
	o := &owner{Network: key.Network, ContainerID: key.ContainerID, IfName: key.IfName}
	if prev != nil {
		o.Ports = append(o.Ports, prev.Ports...)
	}
	for _, p := range fresh {
		o.Ports = append(o.Ports, toRec(p))
	}
	if err := s.Put(ownerPath(key), o); err != nil {
		return fmt.Errorf("record host ports of %s: %w", key.ContainerID, err)
	}
	u.Push(func() error {
		if prev != nil {
			return s.Put(ownerPath(key), prev)
		}
		return s.Del(ownerPath(key))
	})
	for _, p := range fresh {
		e := entry{Network: key.Network, ContainerID: key.ContainerID, IfName: key.IfName, Owner: key.Hash(), Port: toRec(p)}
		if err := createEntry(s, p, &e); err != nil {
			return err
		}
		rel := entryPath(p)
		u.Push(func() error { return s.Del(rel) })
	}
	return nil
}

func createEntry(s *state.Store, p netconf.Port, e *entry) error {
	if err := os.MkdirAll(s.Path(portDir(p)), 0o700); err != nil {
		return cnierr.Wrap(cnierr.IOFailure, fmt.Errorf("reserve %s: %w", p, err))
	}
	data, err := jsonlite.Marshal(e)
	if err != nil {
		return err
	}
	if err := safefile.CreateExclusive(s.Path(entryPath(p)), data, 0o600); err != nil {
		return cnierr.Wrap(cnierr.IOFailure, fmt.Errorf("reserve %s: %w", p, err))
	}
	return nil
}

// conflict checks p against the reservations of its protocol and port.
// It reports mine when key itself already holds exactly p.
func conflict(s *state.Store, key netconf.Key, p netconf.Port) (mine bool, err error) {
	names, err := s.List(portDir(p))
	if err != nil {
		return false, fmt.Errorf("read host-port store: %w", err)
	}
	for _, name := range names {
		q := netconf.Port{HostPort: p.HostPort, Protocol: p.Protocol}
		if name != anyToken {
			ip, perr := netip.ParseAddr(name)
			if perr != nil {
				continue // not ours: the store only holds names it wrote
			}
			q.HostIP = ip
		}
		if !q.Overlaps(p) {
			continue
		}
		var e entry
		_, gerr := s.Get(path.Join(portDir(p), name), &e)
		switch {
		case gerr != nil:
			return false, fmt.Errorf("%w: %s port %d%s is held by an unreadable reservation (%v)",
				ErrPortInUse, p.Protocol, p.HostPort, onIP(q), gerr)
		case e.Owner == key.Hash() && e.key() == key:
			if name == token(p) {
				return true, nil
			}
			continue // key's own, other host IP: ValidatePorts ruled overlaps out
		}
		return false, fmt.Errorf("%w: %s port %d%s is reserved by container %s (network %q, interface %s)",
			ErrPortInUse, p.Protocol, p.HostPort, onIP(q), e.ContainerID, e.Network, e.IfName)
	}
	return false, nil
}

// onIP describes a reservation's host address for messages.
func onIP(p netconf.Port) string {
	if !p.HostIP.IsValid() {
		return " (every host address)"
	}
	return " on " + p.HostIP.String()
}

func readOwner(s *state.Store, key netconf.Key) (*owner, error) {
	var o owner
	ok, err := s.Get(ownerPath(key), &o)
	if err != nil {
		return nil, cnierr.Wrap(cnierr.IOFailure, fmt.Errorf("read host ports of %s: %w", key.ContainerID, err))
	}
	if !ok {
		return nil, nil
	}
	if o.key() != key {
		return nil, cnierr.Wrap(cnierr.IOFailure, fmt.Errorf("host ports of %s: record names %v: %w", key.ContainerID, o.key(), state.ErrCorrupt))
	}
	return &o, nil
}

// Release drops every reservation of key without needing the port list;
// gone is success.
func Release(ctx context.Context, s *state.Store, key netconf.Key) error {
	l, err := s.Lock(ctx, lockName)
	if err != nil {
		return fmt.Errorf("lock host-port store: %w", err)
	}
	defer l.Unlock()
	var o owner
	ok, gerr := s.Get(ownerPath(key), &o)
	if !ok {
		return nil
	}
	if gerr != nil {
		// An unreadable index cannot list the ports; drop it so the
		// attachment is gone, and let GC's sweep take its entries.
		return s.Del(ownerPath(key))
	}
	return release(s, key.Hash(), &o)
}

// release removes o's entries that still name hash, then the index.
func release(s *state.Store, hash string, o *owner) error {
	var errs []error
	for _, r := range o.Ports {
		p, err := r.port()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := dropEntry(s, p, hash); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...) // keep the index: DEL or GC retries
	}
	return s.Del(path.Join(ownerDir, hash+".json"))
}

// dropEntry removes p's file if it belongs to hash, and its directory
// once empty.
func dropEntry(s *state.Store, p netconf.Port, hash string) error {
	var e entry
	ok, err := s.Get(entryPath(p), &e)
	if !ok || (err == nil && e.Owner != hash) {
		return nil
	}
	if err := s.Del(entryPath(p)); err != nil {
		return fmt.Errorf("release %s: %w", p, err)
	}
	os.Remove(s.Path(portDir(p))) // fails while other host IPs hold the port
	return nil
}

// Held returns key's reservations that are in force: listed in its index
// and present in the store under its name (for CHECK and DEL).
func Held(ctx context.Context, s *state.Store, key netconf.Key) ([]netconf.Port, error) {
	o, err := readOwner(s, key)
	if err != nil || o == nil {
		return nil, err
	}
	var out []netconf.Port
	for _, r := range o.Ports {
		p, err := r.port()
		if err != nil {
			return nil, cnierr.Wrap(cnierr.IOFailure, err)
		}
		var e entry
		if ok, err := s.Get(entryPath(p), &e); ok && err == nil && e.Owner == key.Hash() {
			out = append(out, p)
		}
	}
	return out, nil
}
