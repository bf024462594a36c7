// Package cnierr attaches CNI error codes to Go errors.
//
// Packages export sentinels made with New and wrap them with %w; only
// pkg/cniplugin turns a coded error into the *types.Error a runtime sees.
package cnierr

import (
	"errors"
	"fmt"
)

// Code is a CNI error code (the table in DESIGN.md and the README).
type Code uint

const (
	IncompatibleVersion Code = 1
	UnsupportedField    Code = 2
	UnknownContainer    Code = 3
	InvalidEnv          Code = 4
	IOFailure           Code = 5
	DecodeFailure       Code = 6
	InvalidConfig       Code = 7
	InvalidNetNS        Code = 8
	TryAgainLater       Code = 11
	NotAvailable        Code = 50
	NotAvailableLimited Code = 51
	PoolExhausted       Code = 100
	PortInUse           Code = 101
	ParentLink          Code = 102
	Rebind              Code = 103
	Internal            Code = 999
)

// ErrDiffers marks what CHECK found missing or changed since ADD.
var ErrDiffers = New(InvalidConfig, "attachment differs from prevResult")

// Error is an error with a CNI code. Msg is the short, user-facing text.
type Error struct {
	Code Code
	Msg  string
	Err  error // optional cause
}

func (e *Error) Error() string {
	if e.Err == nil {
		return e.Msg
	}
	if e.Msg == "" {
		return e.Err.Error()
	}
	return e.Msg + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// New returns a coded error; package-level sentinels are made with it.
func New(code Code, msg string) *Error { return &Error{Code: code, Msg: msg} }

// Errorf formats like fmt.Errorf (with %w support) and attaches code.
func Errorf(code Code, format string, args ...any) error {
	return &Error{Code: code, Err: fmt.Errorf(format, args...)}
}

// Wrap attaches code to err; nil stays nil.
func Wrap(code Code, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Code: code, Err: err}
}

// CodeOf returns the code of the first coded error in err's chain, or
// Internal when there is none.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Internal
}
