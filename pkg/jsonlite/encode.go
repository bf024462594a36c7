package jsonlite

import (
	"encoding"
	"encoding/json"
	"reflect"
	"slices"
	"strconv"
	"unicode/utf8"
)

var (
	marshalerType     = reflect.TypeFor[json.Marshaler]()
	textMarshalerType = reflect.TypeFor[encoding.TextMarshaler]()
)

// Marshal encodes v as json.Marshal does, for the kinds state records use,
// with the fields resolved as Unmarshal resolves them; other kinds
// (floats, arrays, []byte, interfaces' odd contents, Marshalers, maps with
// non-string keys, ",string" and "omitzero" fields) go to encoding/json.
// TestMarshalSameAsEncodingJSON holds the two byte-equal.
func Marshal(v any) ([]byte, error) {
	e := &encoder{b: make([]byte, 0, 256)}
	if err := e.value(reflect.ValueOf(v)); err != nil {
		return nil, err
	}
	return e.b, nil
}

type encoder struct{ b []byte }

// fallback appends encoding/json's encoding of v.
func (e *encoder) fallback(v reflect.Value) error {
	if v.CanAddr() {
		v = v.Addr() // so that pointer methods are found, as encoding/json's condAddrEncoder
	}
	b, err := json.Marshal(v.Interface())
	e.b = append(e.b, b...)
	return err
}

func (e *encoder) value(v reflect.Value) error {
	if !v.IsValid() {
		e.b = append(e.b, "null"...)
		return nil
	}
	t := v.Type()
	if t.Implements(marshalerType) || (v.CanAddr() && reflect.PointerTo(t).Implements(marshalerType)) {
		if v.Kind() == reflect.Pointer && v.IsNil() {
			e.b = append(e.b, "null"...)
			return nil
		}
		return e.fallback(v)
	}
	if t.Implements(textMarshalerType) || (v.CanAddr() && reflect.PointerTo(t).Implements(textMarshalerType)) {
		if v.Kind() == reflect.Pointer && v.IsNil() {
			e.b = append(e.b, "null"...)
			return nil
		}
		if !t.Implements(textMarshalerType) {
			v = v.Addr()
		}
		m, ok := reflect.TypeAssert[encoding.TextMarshaler](v)
		if !ok { // an interface holding nil
			return e.fallback(v)
		}
		text, err := m.MarshalText()
		if err != nil {
			return e.fallback(v) // encoding/json's MarshalerError
		}
		e.b = AppendString(e.b, string(text))
		return nil
	}
	switch v.Kind() {
	case reflect.Bool:
		e.b = strconv.AppendBool(e.b, v.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		e.b = strconv.AppendInt(e.b, v.Int(), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		e.b = strconv.AppendUint(e.b, v.Uint(), 10)
	case reflect.String:
		if t == numberType {
			return e.fallback(v)
		}
		e.b = AppendString(e.b, v.String())
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			e.b = append(e.b, "null"...)
			return nil
		}
		return e.value(v.Elem())
	case reflect.Struct:
		return e.structValue(v)
	case reflect.Map:
		return e.mapValue(v)
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return e.fallback(v) // base64, or a named byte type's methods
		}
		if v.IsNil() {
			e.b = append(e.b, "null"...)
			return nil
		}
		e.b = append(e.b, '[')
		for i := range v.Len() {
			if i > 0 {
				e.b = append(e.b, ',')
			}
			if err := e.value(v.Index(i)); err != nil {
				return err
			}
		}
		e.b = append(e.b, ']')
	default:
		return e.fallback(v)
	}
	return nil
}

func (e *encoder) structValue(v reflect.Value) error {
	fs := fieldsOf(v.Type())
	if fs.handOff {
		return e.fallback(v)
	}
	e.b = append(e.b, '{')
	first := true
	for _, f := range fs.list {
		fv, ok := fieldForEncode(v, f.index)
		if !ok || (f.omitEmpty && isEmpty(fv)) {
			continue
		}
		if !first {
			e.b = append(e.b, ',')
		}
		first = false
		e.b = AppendString(e.b, f.name)
		e.b = append(e.b, ':')
		if err := e.value(fv); err != nil {
			return err
		}
	}
	e.b = append(e.b, '}')
	return nil
}

func (e *encoder) mapValue(v reflect.Value) error {
	kt := v.Type().Key()
	if kt.Kind() != reflect.String || kt.Implements(textMarshalerType) {
		return e.fallback(v)
	}
	if v.IsNil() {
		e.b = append(e.b, "null"...)
		return nil
	}
	keys := make([]string, 0, v.Len())
	for it := v.MapRange(); it.Next(); {
		keys = append(keys, it.Key().String())
	}
	slices.Sort(keys)
	e.b = append(e.b, '{')
	for i, k := range keys {
		if i > 0 {
			e.b = append(e.b, ',')
		}
		e.b = AppendString(e.b, k)
		e.b = append(e.b, ':')
		if err := e.value(v.MapIndex(reflect.ValueOf(k).Convert(kt))); err != nil {
			return err
		}
	}
	e.b = append(e.b, '}')
	return nil
}

// fieldForEncode is v's field at index; false when a nil embedded
// pointer is on the way (encoding/json skips the field).
func fieldForEncode(v reflect.Value, index []int) (reflect.Value, bool) {
	for i, x := range index {
		if i > 0 && v.Kind() == reflect.Pointer {
			if v.IsNil() {
				return reflect.Value{}, false
			}
			v = v.Elem()
		}
		v = v.Field(x)
	}
	return v, true
}

// isEmpty is encoding/json's isEmptyValue, for omitempty.
func isEmpty(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Array, reflect.Map, reflect.Slice, reflect.String:
		return v.Len() == 0
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Interface, reflect.Pointer:
		return v.IsZero()
	}
	return false
}

// AppendString quotes s as encoding/json does: HTML characters, U+2028
// and U+2029 escaped, invalid UTF-8 as the escape \ufffd.
func AppendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
