package test

// overlay sets extra's keys on conf, a nil value deleting the key. An
// "ipam" map with keys merges into ipamConf the same way, when conf has
// one; any other "ipam" replaces it (an empty map: no IPAM at all).
func overlay(conf, ipamConf, extra map[string]any) map[string]any {
	for k, v := range extra {
		if m, ok := v.(map[string]any); ok && k == "ipam" && ipamConf != nil && len(m) > 0 {
			for ik, iv := range m {
				setOrDelete(ipamConf, ik, iv)
			}
			continue
		}
		setOrDelete(conf, k, v)
	}
	return conf
}

func setOrDelete(m map[string]any, k string, v any) {
	if v == nil {
		delete(m, k)
	} else {
		m[k] = v
	}
}
