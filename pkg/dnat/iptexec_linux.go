package dnat

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// Flavors of the iptables binaries: "" is whichever `iptables` the host
// runs (Debian's alternatives pick legacy or nft).
const (
	FlavorDefault = ""
	FlavorLegacy  = "legacy"
	FlavorNft     = "nft"
)

// iptBinary returns the path of the iptables (or ip6tables) binary of a
// flavor, looking in PATH and then in the sbin directories runtimes often
// leave out of it.
func iptBinary(flavor string, v4 bool) (string, error) {
	name := "ip6tables"
	if v4 {
		name = "iptables"
	}
	if flavor != "" {
		name += "-" + flavor
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		if p, err := exec.LookPath(filepath.Join(dir, name)); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %s not found", ErrUnavailable, name)
}

// openIpt opens a go-iptables runner for a flavor and family. It execs
// `iptables --version`, so call it inside the host namespace.
func openIpt(flavor string, v4 bool) (*iptables.IPTables, error) {
	path, err := iptBinary(flavor, v4)
	if err != nil {
		return nil, err
	}
	proto := iptables.ProtocolIPv6
	if v4 {
		proto = iptables.ProtocolIPv4
	}
	ipt, err := iptables.New(iptables.IPFamily(proto), iptables.Path(path), iptables.Timeout(10))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, path, err)
	}
	return ipt, nil
}

// ensureChain creates chain in table unless it exists.
func ensureChain(ipt *iptables.IPTables, table, chain string) error {
	ok, err := ipt.ChainExists(table, chain)
	if err != nil {
		return fmt.Errorf("look up chain %s %s: %w", table, chain, err)
	}
	if ok {
		return nil
	}
	if err := ipt.NewChain(table, chain); err != nil && !isIptExist(err) {
		return fmt.Errorf("create chain %s %s: %w", table, chain, err)
	}
	return nil
}

// ensureHook inserts the jump at the top of from unless it is there.
func ensureHook(ipt *iptables.IPTables, table, from string, spec []string) error {
	if err := ipt.InsertUnique(table, from, 1, spec...); err != nil {
		return fmt.Errorf("insert jump %s %s %v: %w", table, from, spec, err)
	}
	return nil
}

func appendUnique(ipt *iptables.IPTables, r iptRule) error {
	if err := ipt.AppendUnique(r.Table, r.Chain, r.Spec...); err != nil {
		return fmt.Errorf("append %s %s %s: %w", r.Table, r.Chain, strings.Join(r.Spec, " "), err)
	}
	return nil
}

// deleteRule removes a rule; a rule or chain that is gone is success.
// (One exec: DeleteIfExists would run iptables -C first.)
func deleteRule(ipt *iptables.IPTables, r iptRule) error {
	if err := ipt.Delete(r.Table, r.Chain, r.Spec...); err != nil && !isIptNotExist(err) {
		return fmt.Errorf("delete %s %s %s: %w", r.Table, r.Chain, strings.Join(r.Spec, " "), err)
	}
	return nil
}

// deleteChainIfEmpty removes chain when it holds no rule, first removing
// every jump to it from the built-in chains listed.
func deleteChainIfEmpty(ipt *iptables.IPTables, table, chain string, hooks map[string][]string) error {
	rules, err := listChain(ipt, table, chain)
	if err != nil {
		return fmt.Errorf("list %s %s: %w", table, chain, err)
	}
	if rules == nil {
		return nil // gone
	}
	if len(rules) > 1 { // the first line is "-N chain"
		return nil
	}
	var errs []error
	for from, spec := range hooks {
		errs = append(errs, deleteRule(ipt, iptRule{Table: table, Chain: from, Spec: spec}))
	}
	if err := ipt.DeleteChain(table, chain); err != nil && !isIptNotExist(err) {
		errs = append(errs, fmt.Errorf("delete chain %s %s: %w", table, chain, err))
	}
	return errors.Join(errs...)
}

// rulesWith lists the rules of chain whose text contains s.
func rulesWith(ipt *iptables.IPTables, table, chain, s string) ([]string, error) {
	rules, err := listChain(ipt, table, chain)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(rules, func(r string) bool { return !strings.Contains(r, s) }), nil
}

// listChain lists chain's rules; nil, nil when the chain does not exist.
// iptables-nft 1.8.9 reports a missing chain (or table) as "incompatible",
// so an error is confirmed with ChainExists, which goes by the exit code.
func listChain(ipt *iptables.IPTables, table, chain string) ([]string, error) {
	rules, err := ipt.List(table, chain)
	if err == nil {
		return rules, nil
	}
	if isIptNotExist(err) {
		return nil, nil
	}
	if ok, cerr := ipt.ChainExists(table, chain); cerr == nil && !ok {
		return nil, nil
	}
	return nil, err
}

func isIptNotExist(err error) bool {
	var e *iptables.Error
	if errors.As(err, &e) {
		return e.IsNotExist() || strings.Contains(e.Error(), "No chain/target/match by that name")
	}
	return false
}

func isIptExist(err error) bool {
	var e *iptables.Error
	return errors.As(err, &e) && strings.Contains(e.Error(), "exists")
}

// restoreNat applies lines, iptables-restore commands for the nat table,
// in one transaction with the flavor's iptables-restore: one exec instead
// of one per command, each of which reads and rewrites the whole table.
// If any line fails, the table is left as it was. Call it inside the host
// namespace.
func restoreNat(flavor string, v4 bool, lines []string) error {
	return restore(flavor, v4, restoreTable("nat", lines))
}

// restoreTable is one table's block of iptables-restore input.
func restoreTable(table string, lines []string) string {
	return "*" + table + "\n" + strings.Join(lines, "\n") + "\nCOMMIT\n"
}

// restoreCheck checks that every rule is there (iptables -C) in one
// iptables-restore run, which changes nothing. An error says only that
// one is missing, or that the run failed; ask iptables -C which.
func restoreCheck(flavor string, v4 bool, rules []iptRule) error {
	var tables []string
	for _, r := range rules {
		if !slices.Contains(tables, r.Table) {
			tables = append(tables, r.Table)
		}
	}
	var in strings.Builder
	for _, t := range tables {
		lines, err := restoreLines("-C", slices.DeleteFunc(slices.Clone(rules), func(r iptRule) bool { return r.Table != t }))
		if err != nil {
			return err
		}
		in.WriteString(restoreTable(t, lines))
	}
	return restore(flavor, v4, in.String())
}

// restore feeds in to the flavor's iptables-restore, keeping what it does
// not name (--noflush).
func restore(flavor string, v4 bool, in string) error {
	path, err := iptBinary(flavor, v4)
	if err != nil {
		return err
	}
	cmd := exec.Command(path+"-restore", "--noflush", "-w", "10")
	cmd.Stdin = strings.NewReader(in)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s-restore: %w: %s", path, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// restoreLines are rules as iptables-restore commands cmd (-A, -C, -D), or
// an error when one is not expressible (restoreLine).
func restoreLines(cmd string, rules []iptRule) ([]string, error) {
	lines := make([]string, 0, len(rules))
	for _, r := range rules {
		l, ok := restoreLine(cmd, r)
		if !ok {
			return nil, errors.New("not expressible for iptables-restore")
		}
		lines = append(lines, l)
	}
	return lines, nil
}

// restoreLine is r as an iptables-restore command (-A, -D ...), or false
// when an argument holds a backslash, which the two flavors' parsers may
// not read alike.
func restoreLine(cmd string, r iptRule) (string, bool) {
	parts := []string{cmd, r.Chain}
	for _, a := range r.Spec {
		switch {
		case strings.Contains(a, "\\"):
			return "", false
		case a == "" || strings.ContainsAny(a, " \t\""):
			a = `"` + strings.ReplaceAll(a, `"`, `\"`) + `"`
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " "), true
}
