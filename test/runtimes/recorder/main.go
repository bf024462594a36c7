//go:build runtimes

// Command recorder stands in for a CNI plugin under a real runtime: it
// runs the plugin of the same name from $ND_RT_REAL_BIN with the same
// environment, stdin and arguments, passes its stdout, stderr and exit
// status through unchanged, and appends the call (CNI_* environment,
// stdin, stdout, exit status) as one JSON line to $ND_RT_RECORD. The
// end-to-end tests read it to check what the runtime asked and what the
// plugin answered (e.g. containerd's second DEL: empty CNI_NETNS, no
// prevResult, exit 0).
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Call is one recorded invocation.
type Call struct {
	Plugin   string            `json:"plugin"`
	Env      map[string]string `json:"env"` // CNI_* only
	Stdin    string            `json:"stdin"`
	Stdout   string            `json:"stdout"`
	Stderr   string            `json:"stderr"`
	Exit     int               `json:"exit"`
	Start    time.Time         `json:"start"`
	Duration time.Duration     `json:"duration"`
	Caller   string            `json:"caller"` // the runtime process that ran the plugin
}

func main() {
	name := filepath.Base(os.Args[0])
	real := filepath.Join(os.Getenv("ND_RT_REAL_BIN"), name)
	stdin, _ := io.ReadAll(os.Stdin)
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(real, os.Args[1:]...)
	cmd.Args[0] = os.Args[0] // the plugin may look at its own name (loopback)
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &stdout, io.MultiWriter(os.Stderr, &stderr)
	start := time.Now()
	err := cmd.Run()
	exit := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		exit = ee.ExitCode()
	case err != nil:
		fmt.Fprintf(os.Stderr, "recorder: run %s: %v\n", real, err)
		exit = 127
	}
	os.Stdout.Write(stdout.Bytes())
	c := Call{Plugin: name, Env: map[string]string{}, Stdin: string(stdin), Stdout: stdout.String(),
		Stderr: stderr.String(), Exit: exit, Start: start, Duration: time.Since(start), Caller: caller()}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "CNI_") {
			c.Env[k] = v
		}
	}
	if err := appendCall(os.Getenv("ND_RT_RECORD"), c); err != nil {
		fmt.Fprintf(os.Stderr, "recorder: %v\n", err)
	}
	os.Exit(exit)
}

// caller is the parent's command line (e.g. "podman container cleanup").
func caller() string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", os.Getppid()))
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

// appendCall appends c as one line, under an exclusive lock, since the
// runtime may run plugins concurrently.
func appendCall(path string, c Call) error {
	if path == "" {
		return nil
	}
	line, err := json.Marshal(c)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	_, err = f.Write(append(line, '\n'))
	return err
}
