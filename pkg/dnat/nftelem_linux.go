package dnat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/netdrivers/netdrivers/pkg/netconf"
)

// Element batches are built here rather than by the library: an ADD
// needs NLM_F_EXCL (the library never sets it), so that an element a Del
// is retiring is refused and waited for instead of updated back to life
// while the kernel's set GC may be reaping it.

// elemsMsg is one NFT_MSG_NEWSETELEM or NFT_MSG_DELSETELEM for set, with
// each element's comment (for the maps, the owner's hash; for the
// attachments set, its tag) and timeout (0: never expires).
func elemsMsg(typ uint16, flags netlink.HeaderFlags, key netconf.Key, set string, elems []pubElem, timeout time.Duration) netlink.Message {
	note := key.Hash()
	if set == setAtts {
		note = truncate(tag(key), maxComment)
	}
	var list []netlink.Attribute
	for i, e := range elems {
		a := []netlink.Attribute{{Type: unix.NFTA_SET_ELEM_KEY | unix.NLA_F_NESTED, Data: dataValue(e.Key)}}
		if typ == unix.NFT_MSG_NEWSETELEM {
			if len(e.Val) > 0 {
				a = append(a, netlink.Attribute{Type: unix.NFTA_SET_ELEM_DATA | unix.NLA_F_NESTED, Data: dataValue(e.Val)})
			}
			if timeout > 0 {
				ms := binary.BigEndian.AppendUint64(nil, uint64(max(timeout.Milliseconds(), 1)))
				a = append(a, netlink.Attribute{Type: unix.NFTA_SET_ELEM_TIMEOUT, Data: ms})
			}
			a = append(a, netlink.Attribute{Type: unix.NFTA_SET_ELEM_USERDATA,
				Data: userdata.AppendString(nil, userdata.NFTNL_UDATA_SET_ELEM_COMMENT, note)})
		}
		b, _ := netlink.MarshalAttributes(a) // fixed, valid attributes
		list = append(list, netlink.Attribute{Type: uint16(i+1) | unix.NLA_F_NESTED, Data: b})
	}
	b, _ := netlink.MarshalAttributes(list)
	m := nfMsg(nftables.TableFamilyINet, typ, []netlink.Attribute{
		{Type: unix.NFTA_SET_ELEM_LIST_TABLE, Data: cstr(tableName)},
		{Type: unix.NFTA_SET_ELEM_LIST_SET, Data: cstr(set)},
		{Type: unix.NFTA_SET_ELEM_LIST_ELEMENTS | unix.NLA_F_NESTED, Data: b},
	})
	m.Header.Flags |= netlink.Acknowledge | flags
	return m
}

func dataValue(b []byte) []byte {
	v, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NFTA_DATA_VALUE, Data: b}})
	return v
}

// elemsPerMsg keeps an element list within a netlink attribute's 64 KiB
// (an element is at most ~100 bytes).
const elemsPerMsg = 256

// elemsMsgs groups elems by set, in a fixed order, elemsPerMsg a message.
func elemsMsgs(typ uint16, flags netlink.HeaderFlags, key netconf.Key, elems []pubElem, timeout time.Duration) []netlink.Message {
	var msgs []netlink.Message
	for _, set := range append(pubMaps, setAtts) {
		var in []pubElem
		for _, e := range elems {
			if e.Map == set {
				in = append(in, e)
			}
		}
		for len(in) > 0 {
			n := min(len(in), elemsPerMsg)
			msgs = append(msgs, elemsMsg(typ, flags, key, set, in[:n], timeout))
			in = in[n:]
		}
	}
	return msgs
}

func batchMsg(typ uint16) netlink.Message {
	return netlink.Message{Header: netlink.Header{Type: netlink.HeaderType(typ), Flags: netlink.Request},
		Data: []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, unix.NFNL_SUBSYS_NFTABLES}}
}

// send commits msgs as one transaction (all or nothing) and returns the
// errors of the messages the kernel refused, joined. It acknowledges each
// message with one answer, in order.
func (c *nftConn) send(msgs []netlink.Message) error {
	all := append(append([]netlink.Message{batchMsg(unix.NFNL_MSG_BATCH_BEGIN)}, msgs...),
		batchMsg(unix.NFNL_MSG_BATCH_END))
	if _, err := c.nl.SendMessages(all); err != nil {
		return fmt.Errorf("send nftables batch: %w", err)
	}
	var errs []error
	for n := 0; n < len(msgs); {
		got, err := c.nl.Receive()
		if err != nil {
			var oe *netlink.OpError
			if !errors.As(err, &oe) || !isErrno(oe.Err) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOBUFS) {
				return fmt.Errorf("receive nftables acknowledgements: %w", err) // nothing more comes
			}
			errs = append(errs, err)
			n++
		}
		n += len(got)
	}
	return errors.Join(errs...)
}

// addElems adds elements in one transaction; excl refuses any that
// exists, a timeout retires them. Equivalent to:
// nft add element inet netdrivers MAP { KEY [timeout 1ms] : VALUE } (nft create element with excl)
func addElems(c *nftConn, key netconf.Key, elems []pubElem, timeout time.Duration, excl bool) error {
	flags := netlink.Create
	if excl {
		flags |= netlink.Excl
	}
	return c.send(elemsMsgs(unix.NFT_MSG_NEWSETELEM, flags, key, elems, timeout))
}

// delElems deletes elements in one transaction.
// Equivalent to: nft delete element inet netdrivers MAP { KEY }
func delElems(c *nftConn, key netconf.Key, elems []pubElem) error {
	return c.send(elemsMsgs(unix.NFT_MSG_DELSETELEM, 0, key, elems, 0))
}
