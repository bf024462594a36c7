package veth

import (
	"errors"
	"net"
	"slices"
	"testing"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/nettest"
)

func TestAddDelCheck(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	host, cont := nettest.NewNS(t), nettest.NewNS(t)
	key := netconf.Key{Network: "n", ContainerID: nettest.ID(t), IfName: "eth0"}
	name := HostName(key)
	if len(name) > 15 || name[:4] != "veth" {
		t.Fatalf("HostName = %q", name)
	}
	mac, _ := net.ParseMAC("02:11:22:33:44:55")
	before := nettest.LinkNames(t, host)
	p, err := Add(host.Handle(), cont.Handle(), Spec{HostName: name, ContName: "eth0", MTU: 1400, ContMAC: mac})
	if err != nil {
		t.Fatal(err)
	}
	if p.Cont.Attrs().HardwareAddr.String() != mac.String() || p.Cont.Attrs().MTU != 1400 || p.Host.Attrs().MTU != 1400 {
		t.Errorf("pair = %+v / %+v", p.Host.Attrs(), p.Cont.Attrs())
	}
	if err := Check(host.Handle(), cont.Handle(), name, "eth0", mac); err != nil {
		t.Errorf("Check: %v", err)
	}
	other, _ := net.ParseMAC("02:00:00:00:00:09")
	if err := Check(host.Handle(), cont.Handle(), name, "eth0", other); err == nil {
		t.Error("Check with the wrong MAC passed")
	}
	// A second pair with the same container name fails with code 7 and
	// leaves nothing.
	_, err = Add(host.Handle(), cont.Handle(), Spec{HostName: "vethother0", ContName: "eth0"})
	if !errors.Is(err, ErrExists) || cnierr.CodeOf(err) != cnierr.InvalidConfig {
		t.Errorf("duplicate ifname: %v", err)
	}
	if nettest.HasLink(t, host, "vethother0") {
		t.Error("failed Add left vethother0 behind")
	}
	for range 2 {
		if err := Del(host.Handle(), name); err != nil {
			t.Fatal(err)
		}
	}
	if got := nettest.LinkNames(t, host); !slices.Equal(got, before) {
		t.Errorf("links after Del = %v, want %v", got, before)
	}
	if nettest.HasLink(t, cont, "eth0") {
		t.Error("container end survived Del")
	}
}

func TestDelRefusesNonVeth(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	host := nettest.NewNS(t)
	if err := Del(host.Handle(), "lo"); err == nil {
		t.Error("Del(lo) succeeded")
	}
	if !nettest.HasLink(t, host, "lo") {
		t.Error("lo deleted")
	}
}
