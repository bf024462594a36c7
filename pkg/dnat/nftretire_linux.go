package dnat

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/netconf"
)

// Retiring elements instead of deleting them (see the layout comment).
const (
	// defaultRetire is the timeout a retired element gets: the kernel
	// rounds it up to one tick, the element expires at the next one.
	defaultRetire = time.Millisecond
	// retireWait bounds the wait for retired elements to expire (a tick
	// is 1-10 ms).
	retireWait = 250 * time.Millisecond
)

func (b *nftBackend) retireTimeout() time.Duration {
	if b.retireAfter > 0 {
		return b.retireAfter
	}
	return defaultRetire
}

// addElems queues an attachment's elements and its marker in one batch
// and sends it; a timeout retires them. Re-adding an element that a Del
// is retiring, with the same value, makes it permanent again.
// Equivalent to: nft add element inet netdrivers MAP { KEY [timeout 1ms] : VALUE }; nft add element inet netdrivers attachments { ... }
func addElems(c *nftConn, key netconf.Key, elems []pubElem, timeout time.Duration) error {
	for _, name := range pubMaps {
		var els []nftables.SetElement
		for _, e := range elems {
			if e.Map == name {
				els = append(els, nftables.SetElement{Key: e.Key, Val: e.Val, Comment: key.Hash(), Timeout: timeout})
			}
		}
		if len(els) > 0 {
			if err := c.SetAddElements(pubMap(name), els); err != nil {
				return err
			}
		}
	}
	m := attMarker(key)
	m.Timeout = timeout
	if err := c.SetAddElements(attSet(), []nftables.SetElement{m}); err != nil {
		return err
	}
	return c.Flush()
}

// retire takes an attachment's elements (and its marker) out of the maps.
// It gives them a timeout of one tick instead of deleting them: nothing is
// freed, so nothing waits for an RCU grace period. Where the kernel cannot
// update an element (the marker keeps no timeout) it deletes them. UDP
// elements are waited for until they are gone, then their conntrack
// entries are flushed: no datagram can re-create an entry through a
// mapping on its way out.
func (b *nftBackend) retire(c *nftConn, key netconf.Key, elems []pubElem) error {
	deleteNow := b.deleteOnly
	if !deleteNow {
		if err := expireElems(c, key, elems, b.retireTimeout()); err != nil {
			return err
		}
		g := getElem(setAtts, attMarker(key).Key)
		if err := c.get(g); err != nil {
			return cnierr.Wrap(cnierr.IOFailure, err)
		}
		m, ok, err := g.elem()
		if err != nil {
			return cnierr.Wrap(cnierr.IOFailure, err)
		}
		deleteNow = ok && m.Timeout == 0 // the update was ignored
	}
	var udp []pubElem
	var ports []uint16
	for _, e := range elems {
		if e.Proto == unix.IPPROTO_UDP {
			udp, ports = append(udp, e), append(ports, e.Port)
		}
	}
	if !deleteNow && len(udp) > 0 && waitGone(c, udp, b.retireTimeout()) != nil {
		deleteNow = true
	}
	if deleteNow {
		if err := deleteElems(c, key, elems); err != nil {
			return err
		}
	}
	return flushUDP(b.host, ports)
}

// expireElems gives the elements the retire timeout in one batch or, when
// that fails (an element someone deleted by hand now belongs to another
// attachment), one at a time, leaving other attachments' elements alone.
func expireElems(c *nftConn, key netconf.Key, elems []pubElem, timeout time.Duration) error {
	if addElems(c, key, elems, timeout) == nil {
		return nil
	}
	var errs []error
	for _, e := range elems {
		els := []nftables.SetElement{{Key: e.Key, Val: e.Val, Comment: key.Hash(), Timeout: timeout}}
		if err := c.SetAddElements(pubMap(e.Map), els); err != nil {
			return err
		}
		if err := c.Flush(); err != nil && !errors.Is(err, unix.EEXIST) && !isNotExist(err) {
			errs = append(errs, fmt.Errorf("retire element of map %s for %s: %w", e.Map, e, err))
		}
	}
	if err := addElems(c, key, nil, timeout); err != nil && !isNotExist(err) {
		errs = append(errs, fmt.Errorf("retire element of set %s for %s: %w", setAtts, key.Hash(), err))
	}
	return cnierr.Wrap(cnierr.IOFailure, errors.Join(errs...))
}

// deleteElems deletes the elements and the marker, in one batch or, when
// some are gone already, one at a time ignoring those.
// Equivalent to: nft delete element inet netdrivers MAP { KEY }
func deleteElems(c *nftConn, key netconf.Key, elems []pubElem) error {
	del := func(set *nftables.Set, k []byte) error {
		return c.SetDeleteElements(set, []nftables.SetElement{{Key: k}})
	}
	queue := func() error {
		for _, e := range elems {
			if err := del(pubMap(e.Map), e.Key); err != nil {
				return err
			}
		}
		return del(attSet(), attMarker(key).Key)
	}
	if err := queue(); err != nil {
		return err
	}
	if c.Flush() == nil {
		return nil
	}
	var errs []error
	for _, e := range append(elems, pubElem{Map: setAtts, Key: attMarker(key).Key}) {
		set := attSet()
		if e.Map != setAtts {
			set = pubMap(e.Map)
		}
		if err := del(set, e.Key); err != nil {
			return err
		}
		if err := c.Flush(); err != nil && !isNotExist(err) {
			errs = append(errs, fmt.Errorf("delete element of %s for %s: %w", e.Map, e, err))
		}
	}
	return cnierr.Wrap(cnierr.IOFailure, errors.Join(errs...))
}

// waitGone waits until none of the elements is still being retired: each
// is gone, or someone made it permanent again. It polls one GET round
// trip per millisecond, for at most retireWait past their timeout.
func waitGone(c *nftConn, elems []pubElem, timeout time.Duration) error {
	deadline := time.Now().Add(timeout + retireWait)
	for len(elems) > 0 {
		gets := make([]*nftGet, len(elems))
		for i, e := range elems {
			gets[i] = getElem(e.Map, e.Key)
		}
		if err := c.get(gets...); err != nil {
			return err
		}
		var left []pubElem
		for i, g := range gets {
			got, ok, err := g.elem()
			if err != nil {
				return err
			}
			if ok && got.Timeout > 0 {
				left = append(left, elems[i])
			}
		}
		if elems = left; len(elems) > 0 {
			if time.Now().After(deadline) {
				return fmt.Errorf("wait for %s to expire: %w", elems[0], unix.ETIMEDOUT)
			}
			time.Sleep(time.Millisecond)
		}
	}
	return nil
}
