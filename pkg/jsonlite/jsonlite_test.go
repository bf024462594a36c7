package jsonlite_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/netdrivers/netdrivers/pkg/jsonlite"
	"github.com/netdrivers/netdrivers/pkg/jsonlite/jsontest"
)

// picky is an Unmarshaler that refuses "bad".
type picky string

func (p *picky) UnmarshalJSON(b []byte) error {
	if string(b) == `"bad"` {
		return errors.New("picky: bad")
	}
	*p = picky(b)
	return nil
}

type Inner struct {
	A      string            `json:"a"`
	N      int               `json:"n,omitempty"`
	Tags   []string          `json:"tags"`
	Labels map[string]string `json:"labels"`
}

type Deep struct {
	Shadowed string `json:"name"` // hidden by Rich.Name at a shallower depth
	DeepOnly int
}

type Twin1 struct{ Twin string }
type Twin2 struct{ Twin string } // same depth, neither tagged: dropped

type Tag1 struct {
	Tagged string `json:"tagged"`
}
type Tag2 struct{ Tagged string } // same depth, only Tag1's tagged: it wins

type key string

// ptrMarsh marshals only through a pointer (addressable values).
type ptrMarsh struct{ V int }

func (p *ptrMarsh) MarshalJSON() ([]byte, error) {
	return []byte(fmt.Sprintf(`{ "ptr" : %d }`, p.V)), nil
}

// WithString has a ",string" field, which the decoder hands on whole.
type WithString struct {
	Q int `json:"q,string"`
	S string
}

type unexported struct{ Promoted string }

// Rich has a field of every kind and rule the decoder handles or hands on.
type Rich struct {
	Inner
	*Deep
	Twin1
	Twin2
	Tag1
	Tag2
	unexported
	Name      string            `json:"name"`
	Skip      string            `json:"-"`
	Dash      string            `json:"-,"`
	Bool      bool              `json:"bool"`
	BoolP     *bool             `json:"boolP"`
	Int8      int8              `json:"int8"`
	Uint16    uint16            `json:"uint16"`
	Int       int               `json:"int"`
	IntPP     **int             `json:"intPP"`
	Float     float64           `json:"float"`
	Strs      []string          `json:"strs"`
	Ints      []int             `json:"ints"`
	Objs      []Inner           `json:"objs"`
	ObjPs     []*Inner          `json:"objPs"`
	Map       map[string]int    `json:"map"`
	MapObj    map[string]*Inner `json:"mapObj"`
	MapKey    map[key]bool      `json:"mapKey"`
	MapAny    map[string]any    `json:"mapAny"`
	IntKeys   map[int]string    `json:"intKeys"`
	Any       any               `json:"any"`
	Raw       json.RawMessage   `json:"raw"`
	RawP      *json.RawMessage  `json:"rawP"`
	IP        net.IP            `json:"ip"`
	Addr      netip.Addr        `json:"addr"`
	PrefixP   *netip.Prefix     `json:"prefixP"`
	Picky     picky             `json:"picky"`
	Arr       [2]int            `json:"arr"`
	Bytes     []byte            `json:"bytes"`
	Quoted    *WithString       `json:"quoted"`
	Num       json.Number       `json:"num"`
	PtrInner  *Inner            `json:"ptrInner"`
	PtrMarsh  ptrMarsh          `json:"ptrMarsh"`
	Weird     string            `json:"wéird"`
	BadTag    string            `json:"a\"b"`
	private   string            //lint:ignore U1000 unexported: both decoders must leave it alone
	NoTag     string
	OmitEmpty string `json:",omitempty"`
}

// values are JSON values of every type, odd ones included.
var values = []string{`null`, `true`, `false`, `0`, `-1`, `1.5`, `1e3`, `300`, `70000`, `9223372036854775808`, `-129`, `1e400`, `[1e400,{"x":-1e999}]`,
	`""`, `"s"`, `"bad"`, `"10.0.0.1"`, `"2001:db8::1"`, `"10.0.0.0/8"`, `"aGk="`, `"\u00e9\ud83d\ude00\ud800x\"\\\/\b\f\n\r\t"`, "\"\xff\xfe\"",
	`"12"`, `[]`, `[1,2]`, `["a","b"]`, `[null]`, `[{"a":"x"},null]`, `{}`, `{"a":"x","n":2}`, `{"x":1,"y":null}`,
	`{"a":{"b":[1,{"c":null}]}}`, `{"q":"5","S":"x"}`, `{"q":5}`, `{"A":"up","tags":["t"],"labels":{"k":"v"}}`, ` [ 1 , 2 ] `, `{"n":"str"}`, `{"tags":{}}`}

var keys = []string{"a", "A", "n", "N", "tags", "labels", "name", "NAME", "DeepOnly", "deeponly", "Twin", "tagged", "Tagged",
	"Promoted", "Skip", "-", "bool", "boolP", "int8", "uint16", "int", "intPP", "float", "strs", "ints", "objs", "objPs", "map",
	"mapObj", "mapKey", "mapAny", "intKeys", "any", "raw", "rawP", "ip", "addr", "prefixP", "picky", "arr", "bytes", "quoted",
	"num", "ptrInner", "wéird", "WÉIRD", "a\"b", "BadTag", "private", "NoTag", "noTAG", "OmitEmpty", "unknown", "K", "\u212a"}

func newRich() any { return new(Rich) }

// randomDoc is an object of up to max-1 members drawn from keys and
// values, some keys upper-cased when upper is set.
func randomDoc(rng *rand.Rand, max int, upper bool) []byte {
	var b strings.Builder
	b.WriteString("{")
	for i := range rng.IntN(max) {
		if i > 0 {
			b.WriteString(",")
		}
		k := keys[rng.IntN(len(keys))]
		if upper && rng.IntN(4) == 0 {
			k = strings.ToUpper(k)
		}
		fmt.Fprintf(&b, "%q:%s", k, values[rng.IntN(len(values))])
	}
	b.WriteString("}")
	return []byte(b.String())
}

// TestSameAsEncodingJSON decodes one member of every key with every value,
// then random documents, and compares with encoding/json.
func TestSameAsEncodingJSON(t *testing.T) {
	for _, k := range keys {
		for _, v := range values {
			doc := fmt.Sprintf(`{%q:%s}`, k, v)
			jsontest.Same(t, []byte(doc), newRich)
			jsontest.Same(t, []byte(fmt.Sprintf(`{"ptrInner":%s,"objs":[%s],"mapObj":{"m":%s}}`, doc, doc, doc)), newRich)
		}
	}
	rng := rand.New(rand.NewPCG(7, 11))
	for range 5000 {
		jsontest.Same(t, randomDoc(rng, 6, true), newRich)
	}
}

// TestSameAsEncodingJSONTop: top-level values and invalid documents.
func TestSameAsEncodingJSONTop(t *testing.T) {
	for _, doc := range append(values, ``, `{`, `{"a":}`, `{"a":1,}`, `[1 2]`, `nul`, `{"a":"x"} x`, "{\"a\":\"\x01\"}", `{"a":"\x"}`) {
		jsontest.Same(t, []byte(doc), newRich)
		jsontest.Same(t, []byte(doc), func() any { return new(map[string]any) })
		jsontest.Same(t, []byte(doc), func() any { return new([]*Inner) })
		jsontest.Same(t, []byte(doc), func() any { return new(*int) })
		jsontest.Same(t, []byte(doc), func() any { return new(string) })
	}
}

// TestDecodeOverExisting: decoding into filled values merges as
// encoding/json does (structs and maps kept, slices reused).
func TestDecodeOverExisting(t *testing.T) {
	filled := func() any {
		n := 5
		p := &n
		return &Rich{Name: "old", Int: 9, IntPP: &p, Strs: []string{"x", "y", "z"}, Objs: make([]Inner, 1, 4),
			Map: map[string]int{"keep": 1}, PtrInner: &Inner{A: "keep", N: 3}, Deep: &Deep{DeepOnly: 4}}
	}
	for _, doc := range []string{`{"name":null,"int":null,"intPP":null,"strs":["a"],"objs":[{"n":1},{"a":"b"}],"map":{"new":2},"ptrInner":{"n":7},"DeepOnly":null}`,
		`{"strs":null,"map":null,"ptrInner":null}`, `{"strs":[],"objs":[]}`, `{"intPP":3}`} {
		jsontest.Same(t, []byte(doc), filled)
	}
}

// FuzzSameAsEncodingJSON compares the two decoders on any input.
func FuzzSameAsEncodingJSON(f *testing.F) {
	for _, v := range values {
		f.Add([]byte(`{"objs":[` + v + `],"name":` + v + `}`))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		jsontest.Same(t, data, newRich)
	})
}

// sameMarshal fails t unless Marshal and json.Marshal agree on v (bytes,
// or both an error).
func sameMarshal(t *testing.T, v any) {
	t.Helper()
	want, werr := json.Marshal(v)
	got, gerr := jsonlite.Marshal(v)
	if (werr != nil) != (gerr != nil) || string(got) != string(want) {
		t.Fatalf("Marshal = %s, %v\nencoding/json %s, %v", got, gerr, want, werr)
	}
}

// TestMarshalSameAsEncodingJSON encodes the values random documents
// decode to, through a pointer and by value, and hand-made edge cases.
func TestMarshalSameAsEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	for range 3000 {
		var r Rich
		json.Unmarshal(randomDoc(rng, 8, false), &r)
		sameMarshal(t, &r)
		sameMarshal(t, r)
	}
	one := 1
	p := &one
	edge := []any{nil, 1, "x\u2028\u2029<\xff", []string(nil), []string{}, map[string]int(nil), map[string]int{"b": 1, "a": 2, "B": 3},
		&Rich{Deep: &Deep{DeepOnly: 1}, IntPP: &p, MapKey: map[key]bool{"k": true}, Strs: []string{}, Map: map[string]int{}},
		Rich{Objs: []Inner{{}}, ObjPs: []*Inner{nil, {A: "a"}}, Any: map[string]any{"x": []any{1.5, nil, true}}},
		&Rich{IP: net.IP{1, 2, 3}}, &Rich{IP: net.IPv4(192, 0, 2, 1), Addr: netip.MustParseAddr("2001:db8::1"), PrefixP: new(netip.Prefix)},
		&Rich{Bytes: []byte("hi"), Arr: [2]int{1, 2}, Float: 1e21, Num: "12", Quoted: &WithString{Q: 5}, Raw: json.RawMessage(` {"a" : 1} `)},
		&Rich{Raw: json.RawMessage(`{bad`)}, &Rich{IntKeys: map[int]string{2: "b", 10: "a"}}, &Rich{Picky: "p", Weird: "w", NoTag: "n", OmitEmpty: "o"}}
	for _, v := range edge {
		sameMarshal(t, v)
	}
}

// FuzzMarshalSameAsEncodingJSON encodes what fuzzed documents decode to.
func FuzzMarshalSameAsEncodingJSON(f *testing.F) {
	for _, v := range values {
		f.Add([]byte(`{"objs":[` + v + `],"any":` + v + `,"mapAny":{"k":` + v + `}}`))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r Rich
		json.Unmarshal(data, &r)
		sameMarshal(t, &r)
	})
}
