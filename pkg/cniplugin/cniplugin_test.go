package cniplugin

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
)

func TestToCNI(t *testing.T) {
	sentinel := cnierr.New(cnierr.PoolExhausted, "address pool exhausted")
	cases := []struct {
		err     error
		code    uint
		msgHas  string
		details bool
	}{
		{errors.New("boom"), 999, "boom", false},
		{fmt.Errorf("allocate 10.0.0.0/30: %w", sentinel), 100, "10.0.0.0/30", false},
		{fmt.Errorf("delegate: %w", &types.Error{Code: 7, Msg: "bad range"}), 7, "bad range", false},
		{errors.Join(fmt.Errorf("step: %w", sentinel), errors.New("rollback: x")), 100, "rollback", false},
		{fmt.Errorf("%s: %w", strings.Repeat("x", 400), sentinel), 100, "address pool exhausted", true},
	}
	for _, tc := range cases {
		got := toCNI(tc.err)
		if got.Code != tc.code || !strings.Contains(got.Msg, tc.msgHas) || (got.Details != "") != tc.details {
			t.Errorf("toCNI(%q) = %+v, want code %d, msg with %q, details %v", tc.err, got, tc.code, tc.msgHas, tc.details)
		}
	}
}
