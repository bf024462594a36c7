// Package cniplugin is the one entry point every netdrivers binary calls.
//
// Run does what skel.PluginMainFuncs does, without skel: it locks the OS
// thread, advertises CNI 0.1.0-1.1.0, validates the CNI_* environment and
// the config's version before any handler runs, maps errors to CNI codes,
// and prints exactly one JSON document. (skel, through the CNI library's
// validators, links the regexp package into every binary and decodes the
// config twice more with encoding/json.)
package cniplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/netdrivers/netdrivers/pkg/cnierr"
	"github.com/netdrivers/netdrivers/pkg/jsonlite"
	"github.com/netdrivers/netdrivers/pkg/netconf"
	"github.com/netdrivers/netdrivers/pkg/netns"
	"github.com/netdrivers/netdrivers/pkg/reexec"
)

func init() {
	// Namespace-bound netlink handles and setns need a fixed thread.
	runtime.LockOSThread()
}

// Version is stamped at build time (-ldflags "-X ...cniplugin.Version=").
var Version = "dev"

// SupportedVersions are the CNI spec versions every plugin speaks.
var SupportedVersions = version.All.SupportedVersions()

// Plugin describes one binary. Nil handlers succeed without doing anything.
type Plugin[C any] struct {
	Name string
	// Load parses and validates the plugin's own config, before any change.
	Load   func(r *Request[C]) (C, error)
	Add    func(ctx context.Context, r *Request[C]) (*current.Result, error)
	Del    func(ctx context.Context, r *Request[C]) error
	Check  func(ctx context.Context, r *Request[C]) error
	GC     func(ctx context.Context, r *Request[C]) error
	Status func(ctx context.Context, r *Request[C]) error
	// Args lists the CNI_ARGS keys the plugin reads (besides K8S_*).
	Args []string
	// AllowHostNS lets CNI_NETNS be the plugin's own namespace and leaves
	// every CNI_NETNS judgement to the plugin (hostns, joinns).
	AllowHostNS bool
}

// Request is one invocation.
type Request[C any] struct {
	Verb      string
	Key       netconf.Key
	NetNSPath string        // CNI_NETNS as given; may be empty on DEL
	ContNS    *netns.Handle // nil on DEL when the namespace is gone
	NetNSErr  error         // why ContNS is nil (AllowHostNS plugins and DEL)
	HostNS    *netns.Handle // the namespace the plugin runs in
	Args      netconf.CNIArgs
	CNIPath   []string
	Stdin     []byte
	Base      *netconf.Base
	Conf      C
}

// Attachment is the request's key.
func (r *Request[C]) Attachment() netconf.Key { return r.Key }

// ContainerIface starts a CHECK of a plugin that made the container's
// interface: the prevResult, which CHECK cannot do without, with that
// interface's index and entry there. Name and sandbox must both be
// CNI_IFNAME and CNI_NETNS, as in the reference plugins' CHECK.
func (r *Request[C]) ContainerIface() (*current.Result, int, *current.Interface, error) {
	prev, err := r.Base.Prev()
	if err != nil {
		return nil, -1, nil, err
	}
	if prev == nil {
		return nil, -1, nil, cnierr.Errorf(cnierr.InvalidConfig, "CHECK needs the prevResult of the ADD")
	}
	for i, ifc := range prev.Interfaces {
		if ifc.Name == r.Key.IfName && ifc.Sandbox != "" && ifc.Sandbox == r.NetNSPath {
			return prev, i, ifc, nil
		}
	}
	return nil, -1, nil, cnierr.Errorf(cnierr.InvalidConfig, "prevResult has no interface %q in sandbox %q", r.Key.IfName, r.NetNSPath)
}

// Run is a plugin's main. It does not return.
func Run[C any](p Plugin[C]) {
	reexec.Init() // a detached copy runs its job here and exits
	log.SetPrefix(p.Name + ": ")
	log.SetFlags(0)
	log.SetOutput(os.Stderr)
	os.Exit(run(p, os.Stdin, os.Stdout, os.Stderr))
}

func run[C any](p Plugin[C], stdin io.Reader, stdout, stderr io.Writer) int {
	verb := os.Getenv("CNI_COMMAND")
	switch verb {
	case "":
		// Run by hand: say what this is, as skel does.
		fmt.Fprintf(stderr, "CNI plugin %s (netdrivers) %s\nCNI protocol versions supported: %s\n",
			p.Name, Version, strings.Join(SupportedVersions, ", "))
		return 0
	case "VERSION":
		if err := version.All.Encode(stdout); err != nil {
			log.Printf("write version: %v", err)
			return 1
		}
		return 0
	}
	args, err := readArgs(verb, stdin)
	if err != nil {
		printError(stdout, err, "")
		return 1
	}
	// Delegated plugins inherit it: a skel-based IPAM plugin then skips
	// opening both namespaces again to compare them. openContNS judges
	// CNI_NETNS here, before the handler: ADD and CHECK refuse the
	// plugin's own namespace (unless AllowHostNS), DEL treats it as gone.
	os.Setenv("CNI_NETNS_OVERRIDE", "1")
	closeLog := func() {}
	out, err := func() (out []byte, err error) {
		// The logFile, opened by handle, stays open for the failure and
		// panic lines below: they are what it is for.
		defer func() { closeLog() }()
		defer func() {
			if rec := recover(); rec != nil {
				log.Printf("panic: %v\n%s", rec, debug.Stack())
				err = cnierr.Errorf(cnierr.Internal, "internal error: %v", rec)
			}
		}()
		out, err = handle(p, verb, args, &closeLog)
		if err != nil {
			log.Printf("%s %s: %v", verb, args.ContainerID, err)
		}
		return out, err
	}()
	if err != nil {
		// Only a failure needs the version apart from handle's decode.
		printError(stdout, err, peekVersion(args.StdinData))
		return 1
	}
	if out != nil {
		if _, err := stdout.Write(out); err != nil {
			log.Printf("write result: %v", err)
			return 1
		}
	}
	return 0
}

// cmdArgs is one call's CNI_* environment and config.
type cmdArgs struct {
	ContainerID, Netns, IfName, Args, Path string
	StdinData                              []byte
}

// required lists the variables each verb needs besides CNI_COMMAND (CNI
// spec, "Parameters"); CNI_NETNS is optional for DEL.
var required = map[string][]string{
	"ADD":    {"CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS", "CNI_PATH"},
	"CHECK":  {"CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS", "CNI_PATH"},
	"DEL":    {"CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"},
	"GC":     {"CNI_PATH"},
	"STATUS": {"CNI_PATH"},
}

// readArgs validates the environment for verb, with messages that name
// the variable, and reads the config from stdin.
func readArgs(verb string, stdin io.Reader) (*cmdArgs, error) {
	need, ok := required[verb]
	if !ok {
		return nil, cnierr.Errorf(cnierr.InvalidEnv, "CNI_COMMAND %q is not supported", verb)
	}
	var missing []string
	for _, v := range need {
		if os.Getenv(v) == "" {
			missing = append(missing, v)
		}
	}
	if len(missing) > 0 {
		return nil, cnierr.Errorf(cnierr.InvalidEnv, "required environment variables missing: %s", strings.Join(missing, ", "))
	}
	a := &cmdArgs{ContainerID: os.Getenv("CNI_CONTAINERID"), Netns: os.Getenv("CNI_NETNS"),
		IfName: os.Getenv("CNI_IFNAME"), Args: os.Getenv("CNI_ARGS"), Path: os.Getenv("CNI_PATH")}
	if verb == "ADD" || verb == "CHECK" || verb == "DEL" {
		if err := netconf.ValidateContainerID(a.ContainerID); err != nil {
			return nil, err
		}
		if err := netconf.ValidateIfName(a.IfName); err != nil {
			return nil, err
		}
	}
	// One byte more than netconf accepts, so that it can say the config
	// is too long, and a runaway writer cannot fill the memory.
	data, err := io.ReadAll(io.LimitReader(stdin, netconf.MaxConfigSize+1))
	if err != nil {
		return nil, cnierr.Errorf(cnierr.IOFailure, "read the config from stdin: %v", err)
	}
	a.StdinData = data
	return a, nil
}

// minVersion is the first config version that has each verb.
var minVersion = map[string]string{"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}

// checkVersion refuses a config version the plugin does not speak, or one
// without verb, as skel does: code 1, or 6 when it does not parse.
func checkVersion(verb, v string) error {
	if v == "" {
		v = "0.1.0" // the spec's default
	}
	if min := minVersion[verb]; min != "" {
		ok, err := version.GreaterThanOrEqualTo(v, min)
		if err != nil {
			return cnierr.Errorf(cnierr.DecodeFailure, "cniVersion: %v", err)
		}
		if !ok {
			return cnierr.Errorf(cnierr.IncompatibleVersion, "config version %s does not allow %s (it needs %s or later)", v, verb, min)
		}
	}
	if !slices.Contains(SupportedVersions, v) {
		return cnierr.Errorf(cnierr.IncompatibleVersion, "incompatible CNI versions: config is %q, plugin supports %q", v, SupportedVersions)
	}
	return nil
}

// handle runs verb; a config's logFile is opened into *closeLog, for the
// caller to close once it has logged the outcome.
func handle[C any](p Plugin[C], verb string, args *cmdArgs, closeLog *func()) ([]byte, error) {
	ctx := context.Background()
	base, err := netconf.Load(args.StdinData)
	if err != nil {
		return nil, err
	}
	if base.LogFile != "" {
		*closeLog = openLog(base.LogFile)
	}
	if err := netconf.ValidateNetworkName(base.Name); err != nil {
		return nil, err
	}
	if err := checkVersion(verb, base.CNIVersion); err != nil {
		return nil, err
	}
	if verb == "ADD" {
		// An unreadable prevResult fails ADD before any change; other
		// verbs read it (with Prev) only when they use it.
		if _, err := base.Prev(); err != nil {
			return nil, err
		}
	}
	cniArgs, err := netconf.ParseCNIArgs(args.Args, p.Args...)
	if err != nil {
		return nil, err
	}
	r := &Request[C]{
		Verb:      verb,
		Key:       netconf.Key{Network: base.Name, ContainerID: args.ContainerID, IfName: args.IfName},
		NetNSPath: args.Netns,
		Args:      cniArgs,
		CNIPath:   filepath.SplitList(args.Path),
		Stdin:     args.StdinData,
		Base:      base,
	}
	if p.Load != nil {
		if r.Conf, err = p.Load(r); err != nil {
			return nil, err
		}
	}
	if r.HostNS, err = netns.Self(); err != nil {
		return nil, cnierr.Wrap(cnierr.Internal, err)
	}
	defer r.HostNS.Close()
	if verb == "ADD" || verb == "DEL" || verb == "CHECK" {
		if err := openContNS(p.AllowHostNS, r); err != nil {
			return nil, err
		}
		defer r.ContNS.Close()
	}
	switch verb {
	case "ADD":
		if p.Add == nil {
			return nil, cnierr.Errorf(cnierr.Internal, "ADD is not implemented")
		}
		res, err := p.Add(ctx, r)
		if err != nil {
			return nil, err
		}
		out, err := encodeResult(res, base.CNIVersion)
		if err != nil {
			// Made but not reportable (a 0.2.0 result needs an address):
			// a failed ADD leaves nothing, so DEL takes it back.
			r.Verb = "DEL"
			if derr := callNoResult(ctx, p.Del, r); derr != nil {
				err = errors.Join(err, fmt.Errorf("undo: %w", derr))
			}
		}
		return out, err
	case "DEL":
		return nil, callNoResult(ctx, p.Del, r)
	case "CHECK":
		err := callNoResult(ctx, p.Check, r)
		if err != nil && !coded(err) {
			// What a check finds missing or changed: a difference, not
			// an internal error, whichever package found it.
			err = fmt.Errorf("%w: %w", err, cnierr.ErrDiffers)
		}
		return nil, err
	case "GC":
		return nil, callNoResult(ctx, p.GC, r)
	case "STATUS":
		return nil, callNoResult(ctx, p.Status, r)
	}
	return nil, cnierr.Errorf(cnierr.InvalidEnv, "CNI_COMMAND %q is not supported", verb)
}

func callNoResult[C any](ctx context.Context, fn func(context.Context, *Request[C]) error, r *Request[C]) error {
	if fn == nil {
		return nil
	}
	return fn(ctx, r)
}

// openContNS opens CNI_NETNS. ADD and CHECK need it; DEL tolerates its
// absence. The plugin's own namespace is refused unless allowed.
func openContNS[C any](allowHost bool, r *Request[C]) error {
	if r.NetNSPath == "" {
		r.NetNSErr = netns.ErrNotExist
		return nil // only DEL gets here: precheck requires it otherwise
	}
	h, err := netns.Open(r.NetNSPath)
	if err != nil {
		if allowHost || r.Verb == "DEL" {
			r.NetNSErr = err
			return nil
		}
		return fmt.Errorf("CNI_NETNS: %w", err)
	}
	if h.ID() == r.HostNS.ID() && !allowHost {
		h.Close()
		err := fmt.Errorf("CNI_NETNS %q: %w", r.NetNSPath, netns.ErrHostNS)
		if r.Verb == "DEL" {
			// A path re-bound onto the node (hostns under a runtime that
			// runs several networks on one path): nothing of ours is in
			// the node's namespace to remove, and nothing there is touched.
			log.Printf("DEL: %v; treating the container namespace as gone", err)
			r.NetNSErr = err
			return nil
		}
		return err
	}
	r.ContNS = h
	return nil
}

func encodeResult(res *current.Result, ver string) ([]byte, error) {
	if res == nil {
		return nil, cnierr.Errorf(cnierr.Internal, "ADD returned no result")
	}
	if ver == "" {
		ver = "0.1.0"
	}
	conv, err := res.GetAsVersion(ver)
	if err != nil {
		return nil, cnierr.Errorf(cnierr.IncompatibleVersion, "convert result to %s: %w", ver, err)
	}
	var data []byte
	if r, ok := conv.(*current.Result); ok {
		data, err = marshalResult(r)
	} else { // a 0.x result: rare, so reflection is fine
		data, err = json.MarshalIndent(conv, "", "    ")
	}
	if err != nil {
		return nil, cnierr.Wrap(cnierr.Internal, err)
	}
	return append(data, '\n'), nil
}

// toCNI maps err to the error a runtime sees: the code of the first coded
// error in the chain (or of a delegated plugin's error). The message is the
// whole chain when short, else the coded error's own text; details then
// carry the chain.
func toCNI(err error) *types.Error {
	var te *types.Error
	var ce *cnierr.Error
	full := err.Error()
	out := &types.Error{Code: uint(cnierr.Internal), Msg: full}
	switch {
	case errors.As(err, &ce):
		out.Code = uint(ce.Code)
		if len(full) > maxMsg {
			out.Msg = ce.Error()
		}
	case errors.As(err, &te):
		out.Code = te.Code
		if len(full) > maxMsg {
			out.Msg = te.Msg
		}
	}
	if out.Msg != full {
		out.Details = full
	}
	return out
}

const maxMsg = 300

// coded reports whether err carries a CNI code of its own.
func coded(err error) bool {
	var te *types.Error
	var ce *cnierr.Error
	return errors.As(err, &ce) || errors.As(err, &te)
}

func printError(w io.Writer, err error, ver string) {
	te, ok := err.(*types.Error)
	if !ok {
		te = toCNI(err)
	}
	doc := struct {
		CNIVersion string `json:"cniVersion"`
		*types.Error
	}{CNIVersion: ver, Error: te}
	if !slices.Contains(SupportedVersions, doc.CNIVersion) { // none, or one refused
		doc.CNIVersion = version.Current()
	}
	data, _ := json.MarshalIndent(doc, "", "    ")
	w.Write(append(data, '\n'))
}

// peekVersion is the config's cniVersion, for the error document.
func peekVersion(stdin []byte) string {
	var v struct {
		CNIVersion string `json:"cniVersion"`
	}
	if jsonlite.Unmarshal(stdin, &v) != nil {
		return ""
	}
	return v.CNIVersion
}

func openLog(path string) func() {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		log.Printf("open logFile %q: %v", path, err)
		return func() {}
	}
	log.SetOutput(io.MultiWriter(os.Stderr, f))
	return func() { log.SetOutput(os.Stderr); f.Close() }
}
