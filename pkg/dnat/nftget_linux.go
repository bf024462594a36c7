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

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/netns"
)

// nftConn is one netlink socket in the host namespace for a whole verb:
// batches go through the library; single-object GETs, which it lacks
// (it only dumps whole maps), go straight through the same socket.
type nftConn struct {
	*nftables.Conn
	nl *netlink.Conn
}

// conn opens the verb's socket.
func (b *nftBackend) conn() (*nftConn, error) { return openNft(b.host) }

// openNft opens a socket in the host namespace.
func openNft(host *netns.Handle) (*nftConn, error) {
	c := &nftConn{}
	opts := []nftables.ConnOption{nftables.AsLasting(),
		nftables.WithSockOptions(func(nl *netlink.Conn) error { c.nl = nl; return nil })}
	if !host.IsSelf() {
		opts = append(opts, nftables.WithNetNSFd(host.Fd()))
	}
	var err error
	if c.Conn, err = nftables.New(opts...); err != nil {
		return nil, cnierr.Wrap(cnierr.NotAvailable, fmt.Errorf("open nftables netlink socket: %w", err))
	}
	return c, nil
}

func (c *nftConn) close() { c.CloseLasting() }

// nftGet is one GET request and, after get, its answer.
type nftGet struct {
	msg   netlink.Message
	reply netlink.Message
	err   error // unix.ENOENT when the object does not exist
}

func nfMsg(family nftables.TableFamily, typ uint16, attrs []netlink.Attribute) netlink.Message {
	data, _ := netlink.MarshalAttributes(attrs) // only fixed, valid attributes
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | typ), Flags: netlink.Request},
		Data:   append([]byte{byte(family), unix.NFNETLINK_V0, 0, 0}, data...),
	}
}

func cstr(s string) []byte { return append([]byte(s), 0) }

// getChain asks for one chain. Equivalent to: nft list chain FAMILY TABLE NAME
func getChain(family nftables.TableFamily, table, name string) *nftGet {
	return &nftGet{msg: nfMsg(family, unix.NFT_MSG_GETCHAIN, []netlink.Attribute{
		{Type: unix.NFTA_CHAIN_TABLE, Data: cstr(table)},
		{Type: unix.NFTA_CHAIN_NAME, Data: cstr(name)},
	})}
}

// getSet asks for one set of table inet netdrivers.
// Equivalent to: nft list set inet netdrivers NAME
func getSet(name string) *nftGet {
	return &nftGet{msg: nfMsg(nftables.TableFamilyINet, unix.NFT_MSG_GETSET, []netlink.Attribute{
		{Type: unix.NFTA_SET_TABLE, Data: cstr(tableName)},
		{Type: unix.NFTA_SET_NAME, Data: cstr(name)},
	})}
}

// getElem asks for the one element of set with key (NFT_MSG_GETSETELEM
// without NLM_F_DUMP: a hash lookup in the kernel, not a walk).
// Equivalent to: nft get element inet netdrivers SET { KEY }
func getElem(set string, key []byte) *nftGet {
	el, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NFTA_SET_ELEM_KEY | unix.NLA_F_NESTED, Data: dataValue(key)}})
	list, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NFTA_LIST_ELEM | unix.NLA_F_NESTED, Data: el}})
	return &nftGet{msg: nfMsg(nftables.TableFamilyINet, unix.NFT_MSG_GETSETELEM, []netlink.Attribute{
		{Type: unix.NFTA_SET_ELEM_LIST_TABLE, Data: cstr(tableName)},
		{Type: unix.NFTA_SET_ELEM_LIST_SET, Data: cstr(set)},
		{Type: unix.NFTA_SET_ELEM_LIST_ELEMENTS | unix.NLA_F_NESTED, Data: list},
	})}
}

// getBurst bounds the requests in one write: their answers must fit the
// socket's receive buffer, or the kernel drops some (an attachment can
// publish a thousand ports).
const getBurst = 64

// get sends the requests, getBurst in one write, and reads the answers:
// one round trip for an attachment's few objects. The kernel answers a
// non-dump GET with exactly one message (the object or an error), in
// order, so the n-th answer belongs to the n-th request.
func (c *nftConn) get(reqs ...*nftGet) error {
	for len(reqs) > getBurst {
		if err := c.get(reqs[:getBurst]...); err != nil {
			return err
		}
		reqs = reqs[getBurst:]
	}
	msgs := make([]netlink.Message, len(reqs))
	for i, r := range reqs {
		msgs[i] = r.msg
		r.reply, r.err = netlink.Message{}, nil // a request can be asked again
	}
	sent, err := c.nl.SendMessages(msgs)
	if err != nil {
		return fmt.Errorf("send nftables requests: %w", err)
	}
	for i := 0; i < len(reqs); {
		got, err := c.nl.Receive()
		if err != nil {
			// An answer is an error number; anything else is the socket's.
			var oe *netlink.OpError
			if !errors.As(err, &oe) || !isErrno(oe.Err) {
				return fmt.Errorf("receive nftables answers: %w", err)
			}
			reqs[i].err = err
			i++
		}
		for _, m := range got {
			if i == len(reqs) || m.Header.Sequence != sent[i].Header.Sequence {
				return fmt.Errorf("receive nftables answers: unexpected message %+v", m.Header)
			}
			reqs[i].reply = m
			i++
		}
	}
	return nil
}

func isErrno(err error) bool {
	_, ok := err.(unix.Errno)
	return ok
}

// attrs is the answer's attributes, after the nfgenmsg header.
func (g *nftGet) attrs() []byte {
	if len(g.reply.Data) < 4 {
		return nil
	}
	return g.reply.Data[4:]
}

// found reports whether the object asked for exists.
func (g *nftGet) found() (bool, error) {
	if isNotExist(g.err) {
		return false, nil
	}
	return g.err == nil, g.err
}

// gotElem is an element as the kernel returned it.
type gotElem struct {
	Val     []byte
	Timeout time.Duration // non-zero: the element expires (a Del retired it)
	Comment string
}

// elem decodes the answer to getElem; ok is false when there is none.
func (g *nftGet) elem() (e gotElem, ok bool, err error) {
	if g.err != nil {
		if errors.Is(g.err, unix.ENOENT) {
			return e, false, nil
		}
		return e, false, g.err
	}
	el, err := nested(g.attrs(), unix.NFTA_SET_ELEM_LIST_ELEMENTS, unix.NFTA_LIST_ELEM)
	if err != nil || el == nil {
		return e, false, fmt.Errorf("decode element: %w", err)
	}
	ad, err := netlink.NewAttributeDecoder(el)
	if err != nil {
		return e, false, err
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_SET_ELEM_DATA:
			e.Val, _ = nested(ad.Bytes(), unix.NFTA_DATA_VALUE)
		case unix.NFTA_SET_ELEM_TIMEOUT:
			e.Timeout = time.Duration(binary.BigEndian.Uint64(ad.Bytes())) * time.Millisecond
		case unix.NFTA_SET_ELEM_USERDATA:
			e.Comment, _ = userdata.GetString(ad.Bytes(), userdata.NFTNL_UDATA_SET_ELEM_COMMENT)
		}
	}
	return e, true, ad.Err()
}

// chainPolicy decodes the answer to getChain: ok is false when there is
// no such chain; drop reports a base chain whose policy is drop.
func (g *nftGet) chainPolicy() (ok, drop bool, err error) {
	if g.err != nil {
		if errors.Is(g.err, unix.ENOENT) {
			return false, false, nil
		}
		return false, false, g.err
	}
	p, err := nested(g.attrs(), unix.NFTA_CHAIN_POLICY)
	return true, err == nil && len(p) == 4 && binary.BigEndian.Uint32(p) == nfDrop, err
}

// nested follows a path of attribute types into b and returns the last
// one's payload (nil when absent).
func nested(b []byte, path ...uint16) ([]byte, error) {
	for _, typ := range path {
		ad, err := netlink.NewAttributeDecoder(b)
		if err != nil {
			return nil, err
		}
		var next []byte
		for ad.Next() {
			if ad.Type() == typ && next == nil {
				next = ad.Bytes()
			}
		}
		if err := ad.Err(); err != nil || next == nil {
			return nil, err
		}
		b = next
	}
	return b, nil
}
