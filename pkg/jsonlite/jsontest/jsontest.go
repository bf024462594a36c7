// Package jsontest compares jsonlite with encoding/json, for tests.
package jsontest

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/netdrivers/netdrivers/pkg/jsonlite"
)

// Same fails t unless jsonlite.Unmarshal decodes data into a fresh
// value from newV exactly as json.Unmarshal does: the same value, and the
// same error (type errors compared by value, type and field).
func Same(t testing.TB, data []byte, newV func() any) {
	t.Helper()
	if err := Diff(data, newV); err != nil {
		t.Fatalf("%v\ninput: %q", err, data)
	}
}

// Diff is Same's comparison: nil when the two decoders agree.
func Diff(data []byte, newV func() any) error {
	want, got := newV(), newV()
	werr := json.Unmarshal(data, want)
	gerr := jsonlite.Unmarshal(data, got)
	if msg := sameError(werr, gerr); msg != "" {
		return errors.New(msg)
	}
	if !reflect.DeepEqual(want, got) {
		return fmt.Errorf("decoded\n%#v\nencoding/json\n%#v", got, want)
	}
	return nil
}

func sameError(want, got error) string {
	if (want == nil) != (got == nil) {
		return fmt.Sprintf("error %v, encoding/json's %v", got, want)
	}
	var wt, gt *json.UnmarshalTypeError
	if errors.As(want, &wt) != errors.As(got, &gt) {
		return fmt.Sprintf("error %T %v, encoding/json's %T %v", got, got, want, want)
	}
	switch {
	case wt != nil:
		if wt.Value != gt.Value || wt.Type != gt.Type || wt.Field != gt.Field {
			return fmt.Sprintf("type error {%s %v %q}, encoding/json's {%s %v %q}", gt.Value, gt.Type, gt.Field, wt.Value, wt.Type, wt.Field)
		}
	case want != nil && want.Error() != got.Error():
		return fmt.Sprintf("error %q, encoding/json's %q", got, want)
	}
	return ""
}
