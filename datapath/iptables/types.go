// Package iptables is nodenet's shared iptables machinery. Components
// (pod masquerade, later the Service proxy and NetworkPolicy) describe the
// chains they own; a Manager renders them into one
// `iptables-restore --noflush` payload per table per sync and applies it
// atomically. See README.md for the chains, hooks and guarantees.
package iptables

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/nodenet/nodenet/datapath/iptables/internal/savefmt"
)

// Family is the IP family a Manager or Runner works on.
type Family int

const (
	IPv4 Family = iota + 1
	IPv6
)

func (f Family) String() string {
	switch f {
	case IPv4:
		return "IPv4"
	case IPv6:
		return "IPv6"
	}
	return fmt.Sprintf("Family(%d)", int(f))
}

// Table is an iptables table.
type Table string

const (
	TableFilter Table = "filter"
	TableNAT    Table = "nat"
	TableMangle Table = "mangle"
	TableRaw    Table = "raw"
)

// tableOrder is the order payloads are applied in and dumps are printed in.
var tableOrder = []Table{TableRaw, TableMangle, TableNAT, TableFilter}

func (t Table) valid() bool {
	for _, k := range tableOrder {
		if t == k {
			return true
		}
	}
	return false
}

// Rule is one rule's arguments without the "-A CHAIN" prefix, e.g.
// `-s 10.244.0.0/16 -d 10.244.0.0/16 -j RETURN`. Write rules in the form
// iptables-save prints them (addresses with a prefix length, "-p tcp -m tcp
// --dport 80", basic matches before -m matches) so that golden files and
// the kernel's dump agree.
type Rule string

// Chain is the whole content of one chain, owned by one component.
type Chain struct {
	Table Table
	Name  string
	Rules []Rule
}

const (
	// ChainPrefix starts every chain nodenet owns.
	ChainPrefix = "NODENET-"
	// MaxChainName is iptables' limit: XT_EXTENSION_MAXNAMELEN is 29
	// bytes including the terminating NUL.
	MaxChainName = 28
)

// ValidateChainName checks that name is a chain nodenet may own.
func ValidateChainName(name string) error {
	switch {
	case !strings.HasPrefix(name, ChainPrefix) || len(name) == len(ChainPrefix):
		return fmt.Errorf("chain %q: name must start with %q", name, ChainPrefix)
	case len(name) > MaxChainName:
		return fmt.Errorf("chain %q: name longer than %d characters", name, MaxChainName)
	}
	for _, c := range name {
		if c <= ' ' || c > '~' || c == '"' || c == '\'' || c == '\\' {
			return fmt.Errorf("chain %q: invalid character %q", name, c)
		}
	}
	return nil
}

// commands are iptables-restore commands; a Rule holds only match and
// target arguments, so any of these inside one is a mistake.
var commands = map[string]bool{
	"-A": true, "--append": true, "-I": true, "--insert": true, "-D": true, "--delete": true,
	"-R": true, "--replace": true, "-N": true, "--new-chain": true, "-X": true, "--delete-chain": true,
	"-F": true, "--flush": true, "-P": true, "--policy": true, "-E": true, "--rename-chain": true,
	"-Z": true, "--zero": true, "-t": true, "--table": true,
}

// validate checks the chain on its own; cross-chain checks are the Manager's.
func (c Chain) validate() error {
	_, err := c.check()
	return err
}

// check validates c and returns its rules' jumps to chains of ours.
func (c Chain) check() ([]jump, error) {
	if !c.Table.valid() {
		return nil, fmt.Errorf("chain %s: unknown table %q", c.Name, c.Table)
	}
	if err := ValidateChainName(c.Name); err != nil {
		return nil, err
	}
	var errs []error
	var jumps []jump
	for i, r := range c.Rules {
		args, err := r.args()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s rule %d: %w", c.Table, c.Name, i+1, err))
			continue
		}
		if t, _ := savefmt.Target(args); strings.HasPrefix(t, ChainPrefix) {
			jumps = append(jumps, jump{rule: i + 1, target: t})
		}
	}
	return jumps, errors.Join(errs...)
}

// args tokenizes the rule and rejects what cannot be a single rule.
func (r Rule) args() ([]string, error) {
	if strings.ContainsAny(string(r), "\n\r") {
		return nil, errors.New("rule contains a newline")
	}
	args, err := savefmt.Split(string(r))
	if err != nil {
		return nil, err
	}
	if len(args) == 0 {
		return nil, errors.New("empty rule")
	}
	for _, a := range args {
		if commands[a] {
			return nil, fmt.Errorf("rule contains the command %q; give only matches and a target", a)
		}
	}
	return args, nil
}

// Hook is a jump from a built-in chain into one of our chains. Hooks are
// installed only by the Manager, at position 1, carrying HookComment, and
// only while some owner has the Target chain (see README.md).
type Hook struct {
	Table   Table
	BuiltIn string
	Target  string
}

// HookComment marks hook rules so they can be found in iptables-save
// output independently of how the kernel prints the rest of the rule.
const HookComment = "nodenet hook"

// hooks is the fixed set of entry points. A chain with one of these
// (Table, Target) pairs gets its hook; no other chain is reachable from a
// built-in chain. Adding an entry point is adding a line here.
//
// A built-in chain may have several hooks, and a target may be hooked from
// several built-in chains of its table. Among the hooks of one built-in
// chain, the order of this list is the order in the kernel: a missing hook
// is inserted just before the next of our hooks present in that chain
// (else just after the previous one, else at position 1). The Service
// proxy's hooks come first: its filter chain must see traffic before
// NetworkPolicy accepts it, and it DNATs before anything else looks at
// service addresses.
var hooks = []Hook{
	{TableRaw, "PREROUTING", "NODENET-PREROUTING"},
	{TableRaw, "OUTPUT", "NODENET-OUTPUT"},
	{TableMangle, "PREROUTING", "NODENET-PREROUTING"},
	{TableMangle, "OUTPUT", "NODENET-OUTPUT"},
	{TableNAT, "PREROUTING", "NODENET-SERVICES"},
	{TableNAT, "PREROUTING", "NODENET-PREROUTING"},
	{TableNAT, "OUTPUT", "NODENET-SERVICES"},
	{TableNAT, "OUTPUT", "NODENET-OUTPUT"},
	{TableNAT, "POSTROUTING", "NODENET-PROXY-POST"},
	{TableNAT, "POSTROUTING", "NODENET-POSTROUTING"},
	{TableFilter, "INPUT", "NODENET-PROXY-FILTER"},
	{TableFilter, "INPUT", "NODENET-POLICY"},
	{TableFilter, "INPUT", "NODENET-INPUT"},
	{TableFilter, "FORWARD", "NODENET-PROXY-FILTER"},
	{TableFilter, "FORWARD", "NODENET-POLICY"},
	{TableFilter, "FORWARD", "NODENET-FORWARD"},
	{TableFilter, "OUTPUT", "NODENET-PROXY-FILTER"},
	{TableFilter, "OUTPUT", "NODENET-OUTPUT"},
}

// Hooks returns the fixed set of hooks.
func Hooks() []Hook { return append([]Hook(nil), hooks...) }

// hooksFor returns the hooks whose target is (table, chain), in list order.
func hooksFor(table Table, chain string) []Hook {
	var out []Hook
	for _, h := range hooks {
		if h.Table == table && h.Target == chain {
			out = append(out, h)
		}
	}
	return out
}

// hookIndex is h's position in the fixed list, or -1.
func hookIndex(h Hook) int {
	for i, k := range hooks {
		if k == h {
			return i
		}
	}
	return -1
}

// args is the hook rule's arguments after "-I BUILTIN 1".
func (h Hook) args() string {
	return "-m comment --comment " + savefmt.Quote(HookComment) + " -j " + h.Target
}

// isHookRule reports whether a saved rule in h.BuiltIn is h's jump.
func (h Hook) isHookRule(r savefmt.Rule) bool {
	target, _ := savefmt.Target(r.Args)
	return r.Chain == h.BuiltIn && target == h.Target && savefmt.HasComment(r.Args, HookComment)
}

// Runner abstracts the iptables-save and iptables-restore binaries.
// Implementations must be safe for concurrent use.
type Runner interface {
	// Save returns `iptables-save -t table`; table "" dumps every table
	// that exists (which, unlike -t, does not make legacy iptables create
	// a table).
	Save(ctx context.Context, fam Family, table Table) ([]byte, error)
	// Restore feeds payload to `iptables-restore -w`, with --noflush when
	// noflush is set.
	Restore(ctx context.Context, fam Family, payload []byte, noflush bool) error
}

// StreamRunner is a Runner that can also feed iptables-restore as the
// payload is written, without holding it in memory (a cold start's is
// 20 MB at 10,000 Services).
type StreamRunner interface {
	Runner
	// RestoreFunc is Restore with the payload written by write.
	RestoreFunc(ctx context.Context, fam Family, write func(io.Writer) error, noflush bool) error
}
