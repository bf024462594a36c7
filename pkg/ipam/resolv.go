package ipam

import (
	"bufio"
	"io"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
)

// maxResolvConf bounds the resolv.conf read for "resolvConf".
const maxResolvConf = 1 << 20

// parseResolvConf reads nameserver, domain, search and options lines as
// the reference host-local does. The path is the operator's and commonly
// a symlink (/etc/resolv.conf), so it is followed.
func parseResolvConf(path string) (*types.DNS, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, cnierr.Errorf(cnierr.InvalidConfig, `"ipam.resolvConf": %w`, err)
	}
	defer f.Close()
	dns, err := parseResolv(io.LimitReader(f, maxResolvConf))
	if err != nil {
		return nil, cnierr.Errorf(cnierr.InvalidConfig, `"ipam.resolvConf": read %s: %w`, path, err)
	}
	return dns, nil
}

func parseResolv(r io.Reader) (*types.DNS, error) {
	dns := &types.DNS{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			dns.Nameservers = append(dns.Nameservers, f[1])
		case "domain":
			dns.Domain = f[1]
		case "search":
			dns.Search = append(dns.Search, f[1:]...)
		case "options":
			dns.Options = append(dns.Options, f[1:]...)
		}
	}
	return dns, sc.Err()
}
