package bridge

import (
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/netdrivers/netdrivers/pkg/nettest"
)

func TestEnsureRaceAndGateways(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	host := nettest.NewNS(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := nettest.OpenNS(host)
			if err != nil {
				errs <- err
				return
			}
			defer h.Close()
			br, err := Ensure(h, Spec{Name: "ndbr0", MTU: 1450})
			if err == nil {
				err = SetGateways(h, br, []netip.Prefix{netip.MustParsePrefix("10.9.0.1/24"), netip.MustParsePrefix("2001:db8:9::1/64")}, false)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got := nettest.Addrs(t, host, "ndbr0")
	if len(got) != 2 {
		t.Fatalf("bridge addresses = %v, want the two gateways once", got)
	}
	if err := Check(host.Handle(), "ndbr0", []netip.Prefix{netip.MustParsePrefix("10.9.0.1/24")}, "", PortFlags{}); err != nil {
		t.Errorf("Check: %v", err)
	}
	br, _ := Ensure(host.Handle(), Spec{Name: "ndbr0"})
	other := []netip.Prefix{netip.MustParsePrefix("10.9.0.254/24")}
	if err := SetGateways(host.Handle(), br, other, false); err == nil || !strings.Contains(err.Error(), "forceAddress") {
		t.Errorf("conflicting gateway without force = %v", err)
	}
	if err := SetGateways(host.Handle(), br, other, true); err != nil {
		t.Fatal(err)
	}
	if err := Check(host.Handle(), "ndbr0", other, "", PortFlags{}); err != nil {
		t.Errorf("after force: %v", err)
	}
	if err := Check(host.Handle(), "ndbr0", []netip.Prefix{netip.MustParsePrefix("10.9.0.1/24")}, "", PortFlags{}); err == nil {
		t.Error("Check found the gateway force replaced")
	}
	nettest.AddAddr(t, host, "lo", "10.9.7.1/24") // another link's address is not the bridge's
	if err := Check(host.Handle(), "ndbr0", []netip.Prefix{netip.MustParsePrefix("10.9.7.1/24")}, "", PortFlags{}); err == nil {
		t.Error("Check took an address of lo for the bridge's")
	}
	if _, err := Ensure(host.Handle(), Spec{Name: "lo"}); err == nil {
		t.Error("Ensure adopted lo as a bridge")
	}
	for range 2 {
		if err := Del(host.Handle(), "ndbr0"); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPortFlags(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	host, cont := nettest.NewNS(t), nettest.NewNS(t)
	br, err := Ensure(host.Handle(), Spec{Name: "ndbr1"})
	if err != nil {
		t.Fatal(err)
	}
	nettest.NewVeth(t, host, "vethport0", "", cont, "eth0", "")
	port := nettest.Link(t, host, "vethport0")
	if err := host.NL(t).LinkSetMaster(port, br); err != nil {
		t.Fatal(err)
	}
	f := PortFlags{Hairpin: true, Isolated: true}
	if err := SetPort(host.Handle(), port, f); err != nil {
		t.Fatal(err)
	}
	if err := Check(host.Handle(), "ndbr1", nil, "vethport0", f); err != nil {
		t.Errorf("Check: %v", err)
	}
	if err := Check(host.Handle(), "ndbr1", nil, "vethport0", PortFlags{Hairpin: true}); err == nil {
		t.Error("Check missed the isolated flag")
	}
	if err := Check(host.Handle(), "ndbr1", nil, "vethport0", PortFlags{Isolated: true}); err == nil {
		t.Error("Check missed the hairpin flag")
	}
	if err := host.NL(t).LinkSetHairpin(port, false); err != nil { // SetPort only sets flags on
		t.Fatal(err)
	}
	if err := host.NL(t).LinkSetIsolated(port, false); err != nil {
		t.Fatal(err)
	}
	if err := Check(host.Handle(), "ndbr1", nil, "vethport0", PortFlags{}); err != nil {
		t.Errorf("Check with both flags off: %v", err)
	}
	if err := Check(host.Handle(), "ndbr1", nil, "vethport0", f); err == nil {
		t.Error("Check missed both flags off")
	}
	ports, err := Ports(host.Handle(), "ndbr1")
	if err != nil || len(ports) != 1 || ports[0].Attrs().Name != "vethport0" {
		t.Errorf("Ports = %v, %v", ports, err)
	}
	Del(host.Handle(), "ndbr1")
}

func TestNeighMAC(t *testing.T) {
	nettest.RequireRoot(t)
	t.Parallel()
	a, b := nettest.NewNS(t), nettest.NewNS(t)
	nettest.NewVeth(t, a, "eth0", "198.51.100.5/24", b, "eth0", "198.51.100.6/24")
	l := nettest.Link(t, a, "eth0")
	ip := netip.MustParseAddr("198.51.100.6")
	if mac, err := NeighMAC(a.Handle(), l.Attrs().Index, ip); err != nil || mac != nil {
		t.Fatalf("no entry yet: %v, %v", mac, err)
	}
	nettest.Reachable(t, a, "198.51.100.6")
	want := nettest.Link(t, b, "eth0").Attrs().HardwareAddr.String()
	if mac, err := NeighMAC(a.Handle(), l.Attrs().Index, ip); err != nil || mac.String() != want {
		t.Errorf("after a ping: %v, %v; want %s", mac, err, want)
	}
}
