// Package reexec runs work in a detached copy of the plugin's own binary,
// for what must not keep a runtime waiting: the plugin answers, the copy
// finishes the job. Handlers register in init; cniplugin.Run calls Init
// first, so a copy runs its handler and never reaches the CNI code.
package reexec

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
)

const envName = "NETDRIVERS_REEXEC"

var (
	handlers = map[string]func() int{}
	armed    bool
)

// Register names a handler; a detached copy started by Start(name) runs it.
func Register(name string, fn func() int) { handlers[name] = fn }

// Init runs the handler the environment names, if any, and exits with its
// code. Otherwise it enables Start and returns.
func Init() {
	if name := os.Getenv(envName); name != "" {
		fn, ok := handlers[name]
		if !ok {
			os.Exit(2)
		}
		os.Exit(fn())
	}
	armed = true
}

// Enabled reports whether Start can be used: the process is a plugin
// (Init ran), not a test calling a package directly.
func Enabled() bool { return armed }

// ErrDisabled is returned by Start outside a plugin process.
var ErrDisabled = errors.New("reexec: not a plugin process")

// Start launches a detached copy of this binary running the named handler
// with env added, in a session of its own, its standard streams on
// /dev/null (a runtime waits for the plugin's stdout to close, never for
// the copy), and does not wait for it. It inherits the network namespace
// of the calling thread.
func Start(name string, env ...string) error {
	if !armed {
		return ErrDisabled
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer null.Close()
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = append(append(os.Environ(), envName+"="+name), env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, null, null
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	return cmd.Process.Release() // reparented to init (or a subreaper) when we exit
}
