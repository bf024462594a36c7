// Command rusage runs a command with this process's stdin, stdout and
// stderr, and writes to file descriptor 3 the peak RSS (KiB) of the
// command's process tree and then its own peak RSS before the fork.
//
// It exists because a child's wait4 ru_maxrss also counts the memory
// of the process it was forked from: exec folds the pre-exec mm's
// high-water mark (the parent's, with vfork) into the child's. Forked from
// this small process instead of the benchmark, the plugin's number is its
// own unless it is below this process's, which the second number shows.
package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: rusage COMMAND [ARG...] 3>REPORT")
		os.Exit(2)
	}
	self := selfHWM()
	cmd := exec.Command(os.Args[1], os.Args[2:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := cmd.Run()
	if cmd.ProcessState == nil {
		fmt.Fprintln(os.Stderr, "rusage:", err)
		os.Exit(127)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	fmt.Fprintf(os.NewFile(3, "report"), "%d %d\n", ru.Maxrss, self)
	os.Exit(cmd.ProcessState.ExitCode())
}

// selfHWM is this process's peak RSS so far (VmHWM, KiB).
func selfHWM() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			var kib int64
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kib)
			return kib
		}
	}
	return 0
}
