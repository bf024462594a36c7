package netns

import "testing"

func TestParseMountLine(t *testing.T) {
	cases := []struct {
		line string
		want mountEntry
		ok   bool
	}{
		{`812 29 0:4 net:[4026532281] /run/netns/cni-1 rw shared:5 - nsfs nsfs rw`,
			mountEntry{Root: "net:[4026532281]", Point: "/run/netns/cni-1", FSType: "nsfs"}, true},
		{`30 1 8:1 / /mnt/my\040dir rw,relatime - ext4 /dev/sda1 rw`,
			mountEntry{Root: "/", Point: "/mnt/my dir", FSType: "ext4"}, true},
		{`31 1 8:1 / /a\134b rw master:1 shared:2 - tmpfs tmpfs rw`,
			mountEntry{Root: "/", Point: `/a\b`, FSType: "tmpfs"}, true},
		{`garbage`, mountEntry{}, false},
		{`1 2 3:4 / /x rw a b c d`, mountEntry{}, false}, // no separator
	}
	for _, tc := range cases {
		got, ok := parseMountLine(tc.line)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseMountLine(%q) = %+v, %v; want %+v, %v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
	if got := unescape(`a\04`); got != `a\04` {
		t.Errorf("a truncated escape = %q, want it kept", got)
	}
}
