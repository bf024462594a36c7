// Package undo is a compensation stack for all-or-nothing setup paths.
package undo

import (
	"errors"
	"fmt"
)

// Stack holds undo steps, run newest-first when the guarded operation fails.
// The zero value is ready to use.
type Stack struct {
	fns []func() error
}

// Push records the step that reverses what was just done.
func (s *Stack) Push(fn func() error) { s.fns = append(s.fns, fn) }

// OnError undoes pushed steps newest-first if *errp != nil, joining their
// failures onto it. Use with a named result: defer u.OnError(&err).
func (s *Stack) OnError(errp *error) {
	if *errp == nil {
		return
	}
	if r := s.Run(); r != nil {
		*errp = errors.Join(*errp, fmt.Errorf("rollback: %w", r))
	}
}

// Run runs every step newest-first, continuing past failures, and empties
// the stack. It returns the joined failures.
func (s *Stack) Run() error {
	var errs []error
	for i := len(s.fns) - 1; i >= 0; i-- {
		if err := s.fns[i](); err != nil {
			errs = append(errs, err)
		}
	}
	s.fns = nil
	return errors.Join(errs...)
}

// Len reports how many steps are pending.
func (s *Stack) Len() int { return len(s.fns) }
