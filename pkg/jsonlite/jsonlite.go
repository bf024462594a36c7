// Package jsonlite decodes JSON as encoding/json's Unmarshal does, for the
// kinds plugin configs and state records use, without encoding/json's
// per-type tables. encoding/json builds, on a type's first use, the sorted
// field list and an encoder of every type reachable from it; a plugin is a
// process per call, so it did that for every config on every call (a tenth
// of an ADD's CPU). Here a struct's fields are resolved once per type,
// without sorting or encoders.
//
// Semantics follow encoding/json: keys match field names exactly or else
// case-insensitively, the shallowest embedded field wins, null leaves
// non-nullable values alone, unknown keys are ignored, a type error names
// the field's path and decoding goes on, the first such error returned.
// Kinds it does not handle itself (floats, arrays, byte slices,
// non-empty interfaces, maps with non-string keys, ",string" fields) go
// to encoding/json.
// TestSameAsEncodingJSON and FuzzSameAsEncodingJSON hold the two equal.
package jsonlite

import (
	"cmp"
	"encoding"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Unmarshal decodes data into v, a non-nil pointer, as json.Unmarshal does.
func Unmarshal(data []byte, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || !json.Valid(data) {
		return json.Unmarshal(data, v) // its own error, word for word
	}
	d := &decoder{data: data}
	d.value(rv)
	if d.abort != nil {
		return d.abort
	}
	return d.err
}

type decoder struct {
	data []byte
	i    int
	path []string // JSON names from the root, for type errors
	err  error    // the first type error
	// abort is an Unmarshaler's error, which (as in encoding/json) ends
	// decoding and wins over type errors.
	abort error
}

func (d *decoder) fail(err error) {
	if err != nil && d.abort == nil {
		d.abort = err
	}
}

var (
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
	numberType          = reflect.TypeFor[json.Number]()
	float64Type         = reflect.TypeFor[float64]()
)

func (d *decoder) ws() {
	for d.i < len(d.data) {
		switch d.data[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// raw returns the next value's bytes and moves past it.
func (d *decoder) raw() []byte {
	d.ws()
	start := d.i
	d.skip()
	return d.data[start:d.i]
}

// skip moves past one value (the input is valid JSON).
func (d *decoder) skip() {
	d.ws()
	switch c := d.data[d.i]; c {
	case '"':
		d.i++
		for d.data[d.i] != '"' {
			if d.data[d.i] == '\\' {
				d.i++
			}
			d.i++
		}
		d.i++
	case '{', '[':
		d.i++
		for depth := 1; depth > 0; {
			switch d.data[d.i] {
			case '"':
				d.skip()
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
			d.i++
		}
	default: // number, true, false, null
		for d.i < len(d.data) && !strings.ContainsRune(" \t\n\r,]}", rune(d.data[d.i])) {
			d.i++
		}
	}
}

// typeError records a mismatch, as encoding/json's UnmarshalTypeError.
func (d *decoder) typeError(what string, t reflect.Type) {
	if d.err == nil {
		d.err = &json.UnmarshalTypeError{Value: what, Type: t, Offset: int64(d.i), Field: strings.Join(d.path, ".")}
	}
}

// fallback hands the next value to encoding/json, keeping the path.
func (d *decoder) fallback(v reflect.Value) {
	err := json.Unmarshal(d.raw(), v.Addr().Interface())
	var b64 base64.CorruptInputError
	te, ok := err.(*json.UnmarshalTypeError)
	switch {
	case ok && len(d.path) > 0:
		te.Field = strings.TrimSuffix(strings.Join(d.path, ".")+"."+te.Field, ".")
	case !ok && !errors.As(err, &b64) && !strings.HasPrefix(fmt.Sprint(err), "json: invalid use of ,string"):
		d.fail(err) // a method's error: encoding/json stops there
		return
	}
	if d.err == nil {
		d.err = err // saved, as encoding/json saves type, base64 and ",string" errors
	}
}

// value decodes the next value into v, which is settable or a pointer.
func (d *decoder) value(v reflect.Value) {
	d.ws()
	null := d.data[d.i] == 'n'
	u, tu, pv := indirect(v, null)
	switch {
	case u != nil:
		d.fail(u.UnmarshalJSON(d.raw()))
		return
	case tu != nil && d.data[d.i] == '"':
		s := d.str()
		d.fail(tu.UnmarshalText([]byte(s)))
		return
	case tu != nil:
		what := map[byte]string{'{': "object", '[': "array", 't': "bool", 'f': "bool"}[d.data[d.i]]
		d.skip()
		d.typeError(cmp.Or(what, "number"), v.Type())
		return
	}
	v = pv
	if v.Kind() == reflect.Interface && v.NumMethod() == 0 && !null {
		if x := d.anyValue(); x != nil { // nil: a number out of float64's range, left alone
			v.Set(reflect.ValueOf(x))
		}
		return
	}
	switch c := d.data[d.i]; {
	case c == 'n':
		d.i += 4
		switch v.Kind() {
		case reflect.Interface, reflect.Pointer, reflect.Map, reflect.Slice:
			v.SetZero()
		}
	case c == 't' || c == 'f':
		d.skip()
		if v.Kind() == reflect.Bool {
			v.SetBool(c == 't')
		} else {
			d.typeError("bool", v.Type())
		}
	case c == '"':
		switch {
		case v.Kind() == reflect.String && v.Type() != numberType:
			v.SetString(d.str())
		case v.Kind() == reflect.Interface || v.Kind() == reflect.Slice || v.Kind() == reflect.String:
			d.fallback(v) // base64 into []byte, json.Number
		default:
			d.skip()
			d.typeError("string", v.Type())
		}
	case c == '{':
		switch {
		case v.Kind() == reflect.Struct && !fieldsOf(v.Type()).handOff:
			d.object(v)
		case v.Kind() == reflect.Map && v.Type().Key().Kind() == reflect.String && !reflect.PointerTo(v.Type().Key()).Implements(textUnmarshalerType):
			d.mapObject(v)
		case v.Kind() == reflect.Map || v.Kind() == reflect.Struct:
			d.fallback(v)
		default:
			d.skip()
			d.typeError("object", v.Type())
		}
	case c == '[':
		switch v.Kind() {
		case reflect.Slice:
			d.array(v)
		case reflect.Array:
			d.fallback(v)
		default:
			d.skip()
			d.typeError("array", v.Type())
		}
	default:
		d.number(v)
	}
}

// anyValue decodes the next value as encoding/json decodes into an empty
// interface: objects as map[string]any, arrays as []any, numbers as
// float64 (nil and a type error when out of range).
func (d *decoder) anyValue() any {
	d.ws()
	switch d.data[d.i] {
	case 'n':
		d.i += 4
		return nil
	case 't':
		d.i += 4
		return true
	case 'f':
		d.i += 5
		return false
	case '"':
		return d.str()
	case '{':
		m := map[string]any{}
		d.members(func(key string) { m[key] = d.anyValue() })
		return m
	case '[':
		a := []any{}
		d.elements(func() { a = append(a, d.anyValue()) })
		return a
	}
	start := d.i
	d.skip()
	lit := string(d.data[start:d.i])
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil {
		d.typeError("number "+lit, float64Type)
		return nil
	}
	return f
}

func (d *decoder) number(v reflect.Value) {
	start := d.i
	d.skip()
	lit := string(d.data[start:d.i])
	switch v.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(lit, 10, 64)
		if err != nil || v.OverflowInt(n) {
			d.typeError("number "+lit, v.Type())
			return
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		n, err := strconv.ParseUint(lit, 10, 64)
		if err != nil || v.OverflowUint(n) {
			d.typeError("number "+lit, v.Type())
			return
		}
		v.SetUint(n)
	case reflect.Float32, reflect.Float64, reflect.String:
		d.i = start
		d.fallback(v) // floats, json.Number
	default:
		d.typeError("number", v.Type())
	}
}

func (d *decoder) array(v reflect.Value) {
	n := 0
	d.elements(func() {
		if n >= v.Cap() {
			v.Grow(1)
		}
		if n >= v.Len() {
			v.SetLen(n + 1)
		}
		d.value(v.Index(n)) // over what is there, as encoding/json
		n++
	})
	if n < v.Len() {
		v.SetLen(n)
	}
	if n == 0 {
		v.Set(reflect.MakeSlice(v.Type(), 0, 0))
	}
}

func (d *decoder) mapObject(v reflect.Value) {
	t := v.Type()
	if v.IsNil() {
		v.Set(reflect.MakeMap(t))
	}
	d.members(func(key string) {
		e := reflect.New(t.Elem()).Elem() // type errors name the map, not the key
		d.value(e)
		v.SetMapIndex(reflect.ValueOf(key).Convert(t.Key()), e)
	})
}

func (d *decoder) object(v reflect.Value) {
	fs := fieldsOf(v.Type())
	d.members(func(key string) {
		f := fs.lookup(key)
		if f == nil {
			d.skip()
			return
		}
		fv, err := fieldByIndex(v, f.index)
		if err != nil {
			if d.err == nil {
				d.err = err
			}
			d.skip()
			return
		}
		n := len(d.path)
		d.path = append(append(d.path, f.via...), f.name) // as encoding/json names it
		d.value(fv)
		d.path = d.path[:n]
	})
}

// members calls fn with each key of the object at d.i, positioned at its
// value; fn must consume the value.
func (d *decoder) members(fn func(key string)) {
	d.items('}', func() {
		key := d.str()
		d.ws()
		d.i++ // :
		d.ws()
		fn(key)
	})
}

// elements calls fn for each element of the array at d.i, positioned at
// it; fn must consume the element.
func (d *decoder) elements(fn func()) { d.items(']', fn) }

// items calls fn at each item of the object or array at d.i, which end
// closes, until an Unmarshaler's error ends decoding.
func (d *decoder) items(end byte, fn func()) {
	d.i++ // { or [
	for first := true; d.abort == nil; first = false {
		d.ws()
		if d.data[d.i] == end {
			d.i++
			return
		}
		if !first {
			d.i++ // ,
			d.ws()
		}
		fn()
	}
}

// str reads a JSON string at d.i, unescaped as encoding/json does
// (invalid UTF-8 and lone surrogates become U+FFFD).
func (d *decoder) str() string {
	d.i++ // "
	start := d.i
	for d.data[d.i] != '"' && d.data[d.i] != '\\' && d.data[d.i] < utf8.RuneSelf {
		d.i++
	}
	if d.data[d.i] == '"' {
		d.i++
		return string(d.data[start : d.i-1])
	}
	var b []byte
	b = append(b, d.data[start:d.i]...)
	for {
		c := d.data[d.i]
		switch {
		case c == '"':
			d.i++
			return string(b)
		case c == '\\':
			d.i++
			switch e := d.data[d.i]; e {
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				r := hex4(d.data[d.i+1:])
				d.i += 4
				if utf16.IsSurrogate(r) {
					r2 := rune(-1)
					if d.i+6 < len(d.data) && d.data[d.i+1] == '\\' && d.data[d.i+2] == 'u' {
						r2 = hex4(d.data[d.i+3:])
					}
					if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
						d.i += 6
						r = dec
					} else {
						r = utf8.RuneError
					}
				}
				b = utf8.AppendRune(b, r)
			default: // " \ /
				b = append(b, e)
			}
			d.i++
		case c < utf8.RuneSelf:
			b = append(b, c)
			d.i++
		default:
			r, size := utf8.DecodeRune(d.data[d.i:])
			if r == utf8.RuneError && size == 1 {
				b = utf8.AppendRune(b, utf8.RuneError)
			} else {
				b = append(b, d.data[d.i:d.i+size]...)
			}
			d.i += size
		}
	}
}

func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		default:
			c = c - 'A' + 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

// indirect is encoding/json's: it follows pointers from v, allocating nil
// ones, and returns the first json.Unmarshaler or encoding.TextUnmarshaler
// on the way, or the value to decode into. For null it stops at the last
// settable pointer, so that the pointer is set to nil.
func indirect(v reflect.Value, null bool) (json.Unmarshaler, encoding.TextUnmarshaler, reflect.Value) {
	v0 := v
	haveAddr := false
	if v.Kind() != reflect.Pointer && v.Type().Name() != "" && v.CanAddr() {
		haveAddr = true
		v = v.Addr()
	}
	for {
		if v.Kind() == reflect.Interface && !v.IsNil() {
			e := v.Elem()
			if e.Kind() == reflect.Pointer && !e.IsNil() && (!null || e.Elem().Kind() == reflect.Pointer) {
				haveAddr = false
				v = e
				continue
			}
		}
		if v.Kind() != reflect.Pointer {
			break
		}
		if null && v.CanSet() {
			break
		}
		if v.Elem().Kind() == reflect.Interface && v.Elem().Elem().Equal(v) {
			v = v.Elem()
			break
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		if v.Type().NumMethod() > 0 && v.CanInterface() {
			if u, ok := reflect.TypeAssert[json.Unmarshaler](v); ok {
				return u, nil, reflect.Value{}
			}
			if !null {
				if u, ok := reflect.TypeAssert[encoding.TextUnmarshaler](v); ok {
					return nil, u, reflect.Value{}
				}
			}
		}
		if haveAddr {
			v = v0 // Addr().Elem() would lose the flags of an embedded field
			haveAddr = false
		} else {
			v = v.Elem()
		}
	}
	return nil, nil, v
}

// fieldByIndex is v's field at index, allocating embedded pointers. An
// unexported embedded pointer cannot be allocated: encoding/json's error.
func fieldByIndex(v reflect.Value, index []int) (reflect.Value, error) {
	for i, x := range index {
		if i > 0 && v.Kind() == reflect.Pointer {
			if v.IsNil() {
				if !v.CanSet() {
					return reflect.Value{}, fmt.Errorf("json: cannot set embedded pointer to unexported struct: %v", v.Type().Elem())
				}
				v.Set(reflect.New(v.Type().Elem()))
			}
			v = v.Elem()
		}
		v = v.Field(x)
	}
	return v, nil
}

type field struct {
	name      string
	index     []int
	via       []string // Go names of the embedded fields on the way
	omitEmpty bool
}

// fields are a struct type's JSON fields; handOff marks a type with a
// ",string" or ",omitzero" field, which is left to encoding/json whole.
type fields struct {
	list    []field
	handOff bool
}

// lookup is the field named key, or else the first whose name matches it
// case-insensitively (encoding/json's rule).
func (fs *fields) lookup(key string) *field {
	for i := range fs.list {
		if fs.list[i].name == key {
			return &fs.list[i]
		}
	}
	for i := range fs.list {
		if strings.EqualFold(fs.list[i].name, key) {
			return &fs.list[i]
		}
	}
	return nil
}

var fieldCache sync.Map // reflect.Type → fields

// fieldsOf lists t's JSON fields as encoding/json sees them: exported or
// embedded, named by tag or Go name, "-" skipped, embedded structs'
// fields promoted unless named by a tag, a shallower field hiding deeper
// ones of its name and fields of one name at one depth hiding each other
// unless exactly one is tagged. It runs once per type and process, so it
// avoids maps and sorting: most types have one level and few fields.
func fieldsOf(t reflect.Type) *fields {
	if fs, ok := fieldCache.Load(t); ok {
		return fs.(*fields)
	}
	type cand struct {
		field
		tagged bool
	}
	type embedded struct {
		t     reflect.Type
		index []int
		via   []string
	}
	out := &fields{list: make([]field, 0, t.NumField())}
	var settled []string // names decided at a shallower depth
	var visited []reflect.Type
	var cands []cand
	level := []embedded{{t: t}}
	for len(level) > 0 {
		var next []embedded
		cands = cands[:0]
		for _, l := range level {
			if slices.Contains(visited, l.t) {
				continue
			}
			visited = append(visited, l.t)
			n := l.t.NumField()
			indexes := make([]int, n*(len(l.index)+1)) // one backing array for the level's paths
			for i := range n {
				sf := l.t.Field(i)
				ft := sf.Type
				if sf.Anonymous {
					if ft.Kind() == reflect.Pointer {
						ft = ft.Elem()
					}
					if !sf.IsExported() && ft.Kind() != reflect.Struct {
						continue
					}
				} else if !sf.IsExported() {
					continue
				}
				tag := sf.Tag.Get("json")
				if tag == "-" {
					continue
				}
				name, opts, _ := strings.Cut(tag, ",")
				if !validTagName(name) {
					name = ""
				}
				index := indexes[i*(len(l.index)+1) : (i+1)*(len(l.index)+1) : (i+1)*(len(l.index)+1)]
				copy(index, l.index)
				index[len(l.index)] = i
				if name == "" && sf.Anonymous && ft.Kind() == reflect.Struct {
					next = append(next, embedded{ft, index, append(l.via[:len(l.via):len(l.via)], sf.Name)})
					continue
				}
				tagged := name != ""
				if name == "" {
					name = sf.Name
				}
				omitEmpty := false
				for opts != "" {
					var o string
					o, opts, _ = strings.Cut(opts, ",")
					switch o {
					case "string", "omitzero":
						out.handOff = true
					case "omitempty":
						omitEmpty = true
					}
				}
				cands = append(cands, cand{field{name, index, l.via, omitEmpty}, tagged})
			}
		}
		for i, c := range cands {
			if slices.Contains(settled, c.name) {
				continue
			}
			settled = append(settled, c.name)
			win, count, taggedCount := i, 0, 0
			for j := i; j < len(cands); j++ {
				if cands[j].name == c.name {
					count++
					if cands[j].tagged {
						taggedCount++
						win = j
					}
				}
			}
			if count > 1 && taggedCount != 1 {
				continue // ambiguous: encoding/json drops them all
			}
			out.list = append(out.list, cands[win].field)
		}
		level = next
	}
	if len(visited) > 1 {
		// Index order: the first field whose name folds to a key wins.
		// An insertion sort: the list is short and nearly sorted, and a
		// slices.SortFunc instance would add 20 KB of code to every plugin.
		for i := 1; i < len(out.list); i++ {
			for j := i; j > 0 && slices.Compare(out.list[j-1].index, out.list[j].index) > 0; j-- {
				out.list[j-1], out.list[j] = out.list[j], out.list[j-1]
			}
		}
	}
	fieldCache.Store(t, out)
	return out
}

// validTagName is encoding/json's isValidTag.
func validTagName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.ContainsRune("!#$%&()*+-./:;<=>?@[]^_{|}~ ", c):
		case !unicode.IsLetter(c) && !unicode.IsDigit(c):
			return false
		}
	}
	return true
}
