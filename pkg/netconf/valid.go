package netconf

import "github.com/containernetworking/cni/pkg/types"

// ValidKeys turns GC's cni.dev/valid-attachments into the keys of network.
func ValidKeys(network string, valid []types.GCAttachment) []Key {
	keys := make([]Key, 0, len(valid))
	for _, a := range valid {
		keys = append(keys, Key{Network: network, ContainerID: a.ContainerID, IfName: a.IfName})
	}
	return keys
}
