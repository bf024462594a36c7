package netconf

import (
	"strings"
	"unicode"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
)

// Key identifies one attachment: a container's interface on a network.
// Every kernel object and state file of an attachment is named from it.
type Key struct {
	Network     string
	ContainerID string
	IfName      string
}

// Hash is a stable 16-hex-digit digest of the key; names take a prefix.
func (k Key) Hash() string {
	return ShortHash(k.Network, k.ContainerID, k.IfName)
}

// NetworkHash is a stable 16-hex-digit digest of a network name.
func NetworkHash(network string) string {
	return ShortHash(network)
}

// MaxIDLen bounds container IDs and network names: both become parts of
// file names and rule comments.
const MaxIDLen = 255

// idChars reports whether id is a letter or digit followed by letters,
// digits, '_', '.' and '-': the CNI library's ^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$
// without the regexp package, which would be in every binary.
func idChars(id string) bool {
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			i > 0 && (c == '_' || c == '.' || c == '-') {
			continue
		}
		return false
	}
	return len(id) > 0
}

// ValidateContainerID accepts letters, digits and _ . - (not leading),
// at most MaxIDLen bytes.
func ValidateContainerID(id string) error {
	return validateID("CNI_CONTAINERID", id, cnierr.InvalidEnv)
}

// ValidateNetworkName applies the container ID rules to a network name.
func ValidateNetworkName(name string) error {
	return validateID("network name", name, cnierr.InvalidConfig)
}

func validateID(what, id string, code cnierr.Code) error {
	switch {
	case id == "":
		return cnierr.Errorf(code, "%s is empty", what)
	case len(id) > MaxIDLen:
		return cnierr.Errorf(code, "%s is %d bytes long, more than %d", what, len(id), MaxIDLen)
	case !idChars(id) || strings.Contains(id, ".."):
		return cnierr.Errorf(code, "%s %q may hold only letters, digits, '_', '.' and '-', must start with a letter or digit, and must not contain '..'", what, id)
	}
	return nil
}

// ValidateIfName accepts a Linux interface name: 1-15 bytes, not "." or
// "..", no '/', ':', whitespace or control characters.
func ValidateIfName(name string) error {
	switch {
	case name == "":
		return cnierr.Errorf(cnierr.InvalidEnv, "CNI_IFNAME is empty")
	case len(name) > 15:
		return cnierr.Errorf(cnierr.InvalidEnv, "CNI_IFNAME %q is %d bytes long, more than 15", name, len(name))
	case name == "." || name == "..":
		return cnierr.Errorf(cnierr.InvalidEnv, "CNI_IFNAME %q is not a valid interface name", name)
	}
	for _, c := range name {
		if c == '/' || c == ':' || c <= ' ' || c == 0x7f || unicode.IsSpace(c) {
			return cnierr.Errorf(cnierr.InvalidEnv, "CNI_IFNAME %q contains %q, which an interface name may not", name, c)
		}
	}
	return nil
}
