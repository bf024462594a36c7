package cniplugin

import (
	"bytes"
	"encoding/json"
	"net"
	"strconv"
	"unicode/utf8"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/netdrivers/netdrivers/pkg/jsonlite"
)

// marshalResult is json.MarshalIndent(r, "", "    ") without reflection.
// Result's own MarshalJSON marshals, decodes into a map (to drop an empty
// "dns") and marshals the map: every object's keys come out sorted,
// numbers pass through float64 and invalid UTF-8 becomes U+FFFD. A plugin
// is a process per call, so all of that ran cold each ADD (a tenth of
// its JSON time). TestMarshalResult holds the two byte-equal.
func marshalResult(r *current.Result) ([]byte, error) {
	e := &encoder{b: make([]byte, 0, 512)}
	e.open('{')
	e.optStr("cniVersion", r.CNIVersion)
	if d := r.DNS; !d.IsEmpty() {
		e.key("dns")
		e.open('{')
		e.optStr("domain", d.Domain)
		e.optStrs("nameservers", d.Nameservers)
		e.optStrs("options", d.Options)
		e.optStrs("search", d.Search)
		e.close('}')
	}
	if len(r.Interfaces) > 0 {
		e.key("interfaces")
		list(e, r.Interfaces, e.iface)
	}
	if len(r.IPs) > 0 {
		e.key("ips")
		list(e, r.IPs, e.ipConfig)
	}
	if len(r.Routes) > 0 {
		e.key("routes")
		list(e, r.Routes, e.route)
	}
	e.close('}')
	if e.err != nil {
		return nil, e.err
	}
	var out bytes.Buffer
	out.Grow(2 * len(e.b))
	if err := json.Indent(&out, e.b, "", "    "); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// encoder appends compact JSON to b; the first error sticks.
type encoder struct {
	b     []byte
	first bool // the next member or element is the first of its object or array
	err   error
}

func (e *encoder) open(c byte) {
	e.b = append(e.b, c)
	e.first = true
}

func (e *encoder) sep() {
	if !e.first {
		e.b = append(e.b, ',')
	}
	e.first = false
}

func (e *encoder) key(k string) {
	e.sep()
	e.b = appendString(e.b, k)
	e.b = append(e.b, ':')
}

func (e *encoder) str(k, v string) {
	e.key(k)
	e.b = appendString(e.b, v)
}

func (e *encoder) optStr(k, v string) {
	if v != "" {
		e.str(k, v)
	}
}

func (e *encoder) optInt(k string, v int) {
	if v != 0 {
		e.num(k, v)
	}
}

func (e *encoder) optIntPtr(k string, v *int) {
	if v != nil {
		e.num(k, *v)
	}
}

// num writes v as encoding/json writes the float64 it decoded v into
// (below 1e21, so never in exponent form).
func (e *encoder) num(k string, v int) {
	e.key(k)
	e.b = strconv.AppendFloat(e.b, float64(v), 'f', -1, 64)
}

// optIP is net.IP's MarshalText, omitted when empty.
func (e *encoder) optIP(k string, ip net.IP) {
	if len(ip) == 0 {
		return
	}
	t, err := ip.MarshalText()
	if err != nil && e.err == nil {
		e.err = err
	}
	e.str(k, string(t))
}

func (e *encoder) optStrs(k string, vs []string) {
	if len(vs) == 0 {
		return
	}
	e.key(k)
	e.open('[')
	for _, v := range vs {
		e.sep()
		e.b = appendString(e.b, v)
	}
	e.close(']')
}

// list writes a JSON array; a nil element is null, as encoding/json writes
// a nil pointer.
func list[T any](e *encoder, xs []*T, each func(*T)) {
	e.open('[')
	for _, x := range xs {
		e.sep()
		if x == nil {
			e.b = append(e.b, "null"...)
			continue
		}
		each(x)
	}
	e.close(']')
}

// Members in sorted order, as the map they passed through.
func (e *encoder) iface(i *current.Interface) {
	e.open('{')
	e.optStr("mac", i.Mac)
	e.optInt("mtu", i.Mtu)
	e.str("name", i.Name)
	e.optStr("pciID", i.PciID)
	e.optStr("sandbox", i.Sandbox)
	e.optStr("socketPath", i.SocketPath)
	e.close('}')
}

func (e *encoder) ipConfig(c *current.IPConfig) {
	e.open('{')
	e.str("address", c.Address.String())
	e.optIP("gateway", c.Gateway)
	e.optIntPtr("interface", c.Interface)
	e.close('}')
}

func (e *encoder) route(r *types.Route) {
	e.open('{')
	e.optInt("advmss", r.AdvMSS)
	e.str("dst", r.Dst.String())
	e.optIP("gw", r.GW)
	e.optInt("mtu", r.MTU)
	e.optInt("priority", r.Priority)
	e.optIntPtr("scope", r.Scope)
	e.optIntPtr("table", r.Table)
	e.close('}')
}

// close ends the object or array that open began.
func (e *encoder) close(c byte) {
	e.b = append(e.b, c)
	e.first = false
}

// appendString quotes s as the Result's round trip leaves it: each
// invalid UTF-8 byte is a literal U+FFFD (the first marshal's \ufffd,
// decoded and marshalled again), the rest as encoding/json quotes it.
func appendString(b []byte, s string) []byte {
	if !utf8.ValidString(s) {
		var v []byte
		for i := 0; i < len(s); {
			r, size := utf8.DecodeRuneInString(s[i:])
			v = utf8.AppendRune(v, r) // RuneError for an invalid byte
			i += size
		}
		s = string(v)
	}
	return jsonlite.AppendString(b, s)
}
