package undo

import (
	"errors"
	"strings"
	"testing"
)

func TestOnErrorRunsNewestFirstAndJoins(t *testing.T) {
	var order []int
	f := func() (err error) {
		var u Stack
		defer u.OnError(&err)
		u.Push(func() error { order = append(order, 1); return nil })
		u.Push(func() error { order = append(order, 2); return errors.New("undo 2 failed") })
		if _, err := 0, errors.New("step 3 failed"); err != nil { // shadowed err
			return err
		}
		return nil
	}
	err := f()
	if len(order) != 2 || order[0] != 2 || order[1] != 1 {
		t.Errorf("undo order = %v, want [2 1]", order)
	}
	if err == nil || !strings.Contains(err.Error(), "step 3 failed") || !strings.Contains(err.Error(), "rollback: undo 2 failed") {
		t.Errorf("err = %v", err)
	}
}

func TestOnErrorKeepsSuccess(t *testing.T) {
	ran := false
	f := func() (err error) {
		var u Stack
		defer u.OnError(&err)
		u.Push(func() error { ran = true; return nil })
		return nil
	}
	if err := f(); err != nil || ran {
		t.Errorf("success path: err=%v ran=%v", err, ran)
	}
}
