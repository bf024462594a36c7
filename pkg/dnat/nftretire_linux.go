package dnat

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/netconf"
)

// Retiring elements instead of deleting them (see the layout comment).
const (
	// defaultRetire is the timeout a retired element gets: the kernel
	// rounds it up to one tick, the element expires at the next one.
	defaultRetire = time.Millisecond
	// retireWait bounds the wait for retired elements to expire past
	// their timeout (a tick is 1-10 ms).
	retireWait = 250 * time.Millisecond
)

func (b *nftBackend) retireTimeout() time.Duration {
	if b.retireAfter > 0 {
		return b.retireAfter
	}
	return defaultRetire
}

// retire takes an attachment's elements and its marker out of the maps.
// It gives them a timeout of one tick instead of deleting them: nothing is
// freed, so nothing waits for an RCU grace period. Where the kernel did
// not update the marker (it cannot update elements) it deletes them. UDP
// elements are waited for until they are gone, then their conntrack
// entries are flushed: no datagram can re-create an entry through a
// mapping on its way out.
func (b *nftBackend) retire(c *nftConn, key netconf.Key, elems []pubElem) error {
	all := withMarker(key, elems)
	deleteNow := b.deleteOnly
	if !deleteNow {
		if err := expireElems(c, key, all, b.retireTimeout()); err != nil {
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
	var ports udpFlush
	for _, e := range elems {
		if e.Proto == unix.IPPROTO_UDP {
			udp = append(udp, e)
			ports.add(strings.HasPrefix(e.Map, "dnat4"), e.Port)
		}
	}
	if !deleteNow && len(udp) > 0 && detachedFlush(b.host) {
		// The detached flush waits out the timeout itself: an expired
		// element no longer maps anything, even before the set's GC.
		return flushUDP(b.host, ports, b.retireTimeout()+25*time.Millisecond) // a few ticks
	}
	if !deleteNow && len(udp) > 0 && waitGone(c, udp, b.retireTimeout()) != nil {
		deleteNow = true
	}
	if deleteNow {
		if err := deleteElems(c, key, all); err != nil {
			return err
		}
	}
	return flushUDP(b.host, ports, 0)
}

// expireElems gives the elements a timeout in one transaction or, when
// that fails (an element someone deleted by hand now belongs to another
// attachment), one at a time, leaving other attachments' elements alone.
// An element that is gone is added with the timeout: it expires as well.
func expireElems(c *nftConn, key netconf.Key, elems []pubElem, timeout time.Duration) error {
	if addElems(c, key, elems, timeout, false) == nil {
		return nil
	}
	var errs []error
	for _, e := range elems {
		if err := addElems(c, key, []pubElem{e}, timeout, false); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("retire element of %s for %s: %w", e.Map, e, err))
		}
	}
	return cnierr.Wrap(cnierr.IOFailure, errors.Join(errs...))
}

// deleteElems deletes the elements in one transaction or, when some are
// gone already, one at a time, ignoring those.
func deleteElems(c *nftConn, key netconf.Key, elems []pubElem) error {
	if delElems(c, key, elems) == nil {
		return nil
	}
	var errs []error
	for _, e := range elems {
		if err := delElems(c, key, []pubElem{e}); err != nil && !isNotExist(err) {
			errs = append(errs, fmt.Errorf("delete element of %s for %s: %w", e.Map, e, err))
		}
	}
	return cnierr.Wrap(cnierr.IOFailure, errors.Join(errs...))
}

// waitGone waits until none of the elements is still being retired. It
// asks every millisecond (the kernel's expiry is in ticks of 1-10 ms and
// it reports no finer remainder), for at most retireWait past the timeout.
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
