package netns

import (
	"bytes"
	"os"
	"strconv"
	"strings"
)

// mountEntry is the part of a /proc/self/mountinfo line re-binding needs.
type mountEntry struct {
	Root   string // e.g. net:[4026532281] for an nsfs mount
	Point  string // unescaped mount point
	FSType string
}

// findMount returns the topmost mount at point in the calling thread's
// mount table (the plugin's mount namespace, which is the runtime's), or
// nil. Only lines naming point are parsed: hosts carry hundreds of mounts.
func findMount(point string) (*mountEntry, error) {
	data, err := os.ReadFile("/proc/thread-self/mountinfo")
	if err != nil {
		return nil, err
	}
	needle := " " + escape(point) + " "
	var top *mountEntry
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if !bytes.Contains(line, []byte(needle)) {
			continue
		}
		if e, ok := parseMountLine(string(line)); ok && e.Point == point {
			top = &e
		}
	}
	return top, nil
}

// countMounts reports how many mounts are stacked at point.
func countMounts(point string) (int, error) {
	data, err := os.ReadFile("/proc/thread-self/mountinfo")
	if err != nil {
		return 0, err
	}
	needle, n := " "+escape(point)+" ", 0
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, needle) {
			if e, ok := parseMountLine(line); ok && e.Point == point {
				n++
			}
		}
	}
	return n, nil
}

// escape encodes what the kernel escapes in mountinfo paths.
func escape(s string) string {
	return strings.NewReplacer(" ", `\040`, "\t", `\011`, "\n", `\012`, `\`, `\134`).Replace(s)
}

// parseMountLine reads "ID PARENT MAJ:MIN ROOT POINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER".
func parseMountLine(line string) (mountEntry, bool) {
	fields := strings.Fields(line)
	if len(fields) < 10 {
		return mountEntry{}, false
	}
	sep := -1
	for i := 6; i < len(fields); i++ {
		if fields[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || sep+1 >= len(fields) {
		return mountEntry{}, false
	}
	return mountEntry{Root: unescape(fields[3]), Point: unescape(fields[4]), FSType: fields[sep+1]}, true
}

// unescape decodes the kernel's octal escapes (\040 for a space, ...).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
