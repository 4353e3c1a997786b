// Package iptablestest provides a fake iptables for tests: Fake interprets
// iptables-restore payloads into an in-memory ruleset and dumps it in
// iptables-save format, and Tracer walks a packet through that ruleset.
// Components golden-test what would end up in the kernel without root.
package iptablestest

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/nodenet/nodenet/datapath/iptables"
	"github.com/nodenet/nodenet/datapath/iptables/internal/savefmt"
)

// Call is one Restore made on a Fake.
type Call struct {
	Family  iptables.Family
	Payload string
	Noflush bool
}

// Fake is an in-memory iptables implementing iptables.Runner. It keeps
// rules as the tokens it was given: unlike the kernel it does not
// canonicalize them (e.g. it keeps "-s 10.0.0.1" without "/32").
//
// Like legacy iptables-restore, each COMMIT applies its table on its own: a
// failure leaves the tables committed before it applied and discards the
// one being parsed.
type Fake struct {
	mu       sync.Mutex // guards every field below
	rulesets map[iptables.Family]map[iptables.Table]*table
	restores []Call
	saves    int
	hook     func(Call) error
}

var _ iptables.Runner = (*Fake)(nil)

type table struct {
	name   iptables.Table
	chains map[string]*chain
}

type chain struct {
	builtin bool
	policy  string // "-" for user chains
	rules   [][]string
}

// builtins lists each table's built-in chains in iptables-save order.
var builtins = map[iptables.Table][]string{
	iptables.TableRaw:    {"PREROUTING", "OUTPUT"},
	iptables.TableMangle: {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
	iptables.TableNAT:    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
	iptables.TableFilter: {"INPUT", "FORWARD", "OUTPUT"},
}

var tableOrder = []iptables.Table{iptables.TableRaw, iptables.TableMangle, iptables.TableNAT, iptables.TableFilter}

// targets are the target extensions the Fake accepts besides user chains.
var targets = map[string]bool{
	"ACCEPT": true, "DROP": true, "RETURN": true, "REJECT": true, "QUEUE": true, "NFQUEUE": true,
	"MASQUERADE": true, "SNAT": true, "DNAT": true, "REDIRECT": true, "NETMAP": true,
	"MARK": true, "CONNMARK": true, "LOG": true, "NOTRACK": true, "CT": true, "TPROXY": true, "TCPMSS": true,
}

// NewFake returns an empty Fake.
func NewFake() *Fake {
	return &Fake{rulesets: map[iptables.Family]map[iptables.Table]*table{}}
}

func newTable(name iptables.Table) *table {
	t := &table{name: name, chains: map[string]*chain{}}
	for _, c := range builtins[name] {
		t.chains[c] = &chain{builtin: true, policy: "ACCEPT"}
	}
	return t
}

func (t *table) clone() *table {
	c := &table{name: t.name, chains: make(map[string]*chain, len(t.chains))}
	for name, ch := range t.chains {
		c.chains[name] = &chain{builtin: ch.builtin, policy: ch.policy, rules: slices.Clone(ch.rules)}
	}
	return c
}

// SetRestoreHook makes every later Restore call fn first; a non-nil
// result fails that Restore without changing anything. nil removes it.
func (f *Fake) SetRestoreHook(fn func(Call) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hook = fn
}

// Restores returns the Restore calls made so far.
func (f *Fake) Restores() []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.restores)
}

// Saves returns the number of Save calls made so far.
func (f *Fake) Saves() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.saves
}

// ResetCalls forgets the recorded calls, keeping the ruleset.
func (f *Fake) ResetCalls() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.restores, f.saves = nil, 0
}

// Save implements iptables.Runner. A table that was never restored is
// printed with its empty built-in chains, as iptables-nft-save does.
func (f *Fake) Save(_ context.Context, fam iptables.Family, tbl iptables.Table) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.saves++
	if tbl == "" {
		return []byte(f.dump(fam)), nil
	}
	if builtins[tbl] == nil {
		return nil, fmt.Errorf("fake iptables-save: unknown table %q", tbl)
	}
	t := f.rulesets[fam][tbl]
	if t == nil {
		t = newTable(tbl)
	}
	return []byte(t.dump()), nil
}

// Dump returns the ruleset of fam in iptables-save format, without the
// "# Generated" comments: every table that a Restore touched.
func (f *Fake) Dump(fam iptables.Family) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dump(fam)
}

// DumpTable returns one table of fam in iptables-save format.
func (f *Fake) DumpTable(fam iptables.Family, tbl iptables.Table) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t := f.rulesets[fam][tbl]; t != nil {
		return t.dump()
	}
	return newTable(tbl).dump()
}

// String dumps both families.
func (f *Fake) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	for _, fam := range []iptables.Family{iptables.IPv4, iptables.IPv6} {
		if len(f.rulesets[fam]) > 0 {
			fmt.Fprintf(&b, "# %s\n%s", fam, f.dump(fam))
		}
	}
	return b.String()
}

func (f *Fake) dump(fam iptables.Family) string {
	var b strings.Builder
	for _, name := range tableOrder {
		if t := f.rulesets[fam][name]; t != nil {
			b.WriteString(t.dump())
		}
	}
	return b.String()
}

// chainOrder is iptables-save's order: built-ins, then user chains by name.
func (t *table) chainOrder() []string {
	order := slices.Clone(builtins[t.name])
	var user []string
	for name, c := range t.chains {
		if !c.builtin {
			user = append(user, name)
		}
	}
	slices.Sort(user)
	return append(order, user...)
}

func (t *table) dump() string {
	var b strings.Builder
	b.WriteString("*" + string(t.name) + "\n")
	order := t.chainOrder()
	for _, name := range order {
		fmt.Fprintf(&b, ":%s %s [0:0]\n", name, t.chains[name].policy)
	}
	for _, name := range order {
		for _, r := range t.chains[name].rules {
			b.WriteString("-A " + name + " " + savefmt.Join(r) + "\n")
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// Restore implements iptables.Runner by interpreting payload.
func (f *Fake) Restore(_ context.Context, fam iptables.Family, payload []byte, noflush bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	call := Call{Family: fam, Payload: string(payload), Noflush: noflush}
	f.restores = append(f.restores, call)
	if f.hook != nil {
		if err := f.hook(call); err != nil {
			return err
		}
	}
	if f.rulesets[fam] == nil {
		f.rulesets[fam] = map[iptables.Table]*table{}
	}
	tables := f.rulesets[fam]
	var cur *table
	for i, line := range strings.Split(string(payload), "\n") {
		line = strings.TrimSpace(line)
		var err error
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "*"):
			cur, err = openTable(tables, iptables.Table(line[1:]), cur, noflush)
		case cur == nil:
			err = fmt.Errorf("%q outside a table", line)
		case line == "COMMIT":
			tables[cur.name], cur = cur, nil
		case strings.HasPrefix(line, ":"):
			err = cur.declare(strings.Fields(line[1:]))
		default:
			var args []string
			if args, err = savefmt.Split(line); err == nil {
				err = cur.exec(fam, args)
			}
		}
		if err != nil {
			return fmt.Errorf("fake iptables-restore: line %d failed: %w", i+1, err)
		}
	}
	if cur != nil {
		return fmt.Errorf("fake iptables-restore: table %s: COMMIT expected", cur.name)
	}
	return nil
}

// openTable starts the transaction on name. Without --noflush,
// iptables-restore flushes every chain of the table and deletes its user
// chains; built-in policies stay until declared.
func openTable(tables map[iptables.Table]*table, name iptables.Table, cur *table, noflush bool) (*table, error) {
	if cur != nil {
		return nil, fmt.Errorf("table %s: COMMIT expected", cur.name)
	}
	if builtins[name] == nil {
		return nil, fmt.Errorf("unknown table %q", name)
	}
	old := tables[name]
	if old == nil {
		return newTable(name), nil
	}
	if noflush {
		return old.clone(), nil
	}
	t := newTable(name)
	for n, c := range t.chains {
		c.policy = old.chains[n].policy
	}
	return t, nil
}

// declare handles ":CHAIN POLICY [p:b]". Declaring a user chain creates it,
// or flushes it if it exists: the kernel fact the Manager relies on.
func (t *table) declare(f []string) error {
	if len(f) < 2 {
		return fmt.Errorf("bad chain declaration %q", strings.Join(f, " "))
	}
	name, policy := f[0], f[1]
	if c := t.chains[name]; c != nil && c.builtin {
		if policy == "-" {
			return fmt.Errorf("built-in chain %s needs a policy", name)
		}
		c.policy = policy
		return nil
	}
	if policy != "-" {
		return fmt.Errorf("user chain %s cannot have policy %s", name, policy)
	}
	t.chains[name] = &chain{policy: "-"}
	return nil
}

func (t *table) chain(args []string) (string, *chain, error) {
	if len(args) < 2 {
		return "", nil, fmt.Errorf("%s: chain name missing", args[0])
	}
	c := t.chains[args[1]]
	if c == nil {
		return args[1], nil, fmt.Errorf("%s %s: no chain by that name", args[0], args[1])
	}
	return args[1], c, nil
}

// exec runs one command line of a restore payload.
func (t *table) exec(fam iptables.Family, args []string) error {
	switch args[0] {
	case "-N", "--new-chain":
		if len(args) != 2 {
			return fmt.Errorf("-N takes one chain")
		}
		if t.chains[args[1]] != nil {
			return fmt.Errorf("-N %s: chain already exists", args[1])
		}
		t.chains[args[1]] = &chain{policy: "-"}
		return nil
	case "-X", "--delete-chain":
		names := args[1:]
		if len(names) == 0 {
			for name, c := range t.chains {
				if !c.builtin {
					names = append(names, name)
				}
			}
		}
		return t.deleteChains(names)
	case "-F", "--flush":
		if len(args) == 1 {
			for _, c := range t.chains {
				c.rules = nil
			}
			return nil
		}
		_, c, err := t.chain(args)
		if err == nil {
			c.rules = nil
		}
		return err
	case "-P", "--policy":
		_, c, err := t.chain(args)
		if err == nil && (!c.builtin || len(args) != 3) {
			err = fmt.Errorf("-P needs a built-in chain and a policy")
		}
		if err == nil {
			c.policy = args[2]
		}
		return err
	case "-A", "--append", "-I", "--insert", "-D", "--delete":
		name, c, err := t.chain(args)
		if err != nil {
			return err
		}
		return t.editRules(fam, name, c, args[0], args[2:])
	}
	return fmt.Errorf("unsupported command %q", args[0])
}

func (t *table) deleteChains(names []string) error {
	for _, name := range names {
		c := t.chains[name]
		switch {
		case c == nil:
			return fmt.Errorf("-X %s: no chain by that name", name)
		case c.builtin:
			return fmt.Errorf("-X %s: cannot delete a built-in chain", name)
		case len(c.rules) > 0:
			return fmt.Errorf("-X %s: directory not empty (chain has rules)", name)
		}
	}
	for _, name := range names {
		for from, c := range t.chains {
			for _, r := range c.rules {
				if target, _ := savefmt.Target(r); target == name && !slices.Contains(names, from) {
					return fmt.Errorf("-X %s: too many links (referenced from %s)", name, from)
				}
			}
		}
	}
	for _, name := range names {
		delete(t.chains, name)
	}
	return nil
}

func (t *table) editRules(fam iptables.Family, name string, c *chain, cmd string, rule []string) error {
	switch cmd {
	case "-D", "--delete":
		if len(rule) == 1 {
			if n, err := strconv.Atoi(rule[0]); err == nil {
				if n < 1 || n > len(c.rules) {
					return fmt.Errorf("-D %s %d: index of deletion too big", name, n)
				}
				c.rules = slices.Delete(c.rules, n-1, n)
				return nil
			}
		}
		for i, r := range c.rules {
			if slices.Equal(r, rule) {
				c.rules = slices.Delete(c.rules, i, i+1)
				return nil
			}
		}
		return fmt.Errorf("-D %s %s: bad rule (does a matching rule exist in that chain?)", name, savefmt.Join(rule))
	case "-I", "--insert":
		pos := 1
		if len(rule) > 0 {
			if n, err := strconv.Atoi(rule[0]); err == nil {
				pos, rule = n, rule[1:]
			}
		}
		if pos < 1 || pos > len(c.rules)+1 {
			return fmt.Errorf("-I %s %d: index of insertion too big", name, pos)
		}
		if err := t.checkRule(fam, rule); err != nil {
			return err
		}
		c.rules = slices.Insert(c.rules, pos-1, rule)
		return nil
	}
	if err := t.checkRule(fam, rule); err != nil {
		return err
	}
	c.rules = append(c.rules, rule)
	return nil
}

// checkRule rejects what the kernel would: jumps to missing chains or
// unknown targets, to built-in chains, and addresses of the other family.
func (t *table) checkRule(fam iptables.Family, rule []string) error {
	if len(rule) == 0 {
		return fmt.Errorf("empty rule")
	}
	if target, _ := savefmt.Target(rule); target != "" {
		c := t.chains[target]
		switch {
		case c != nil && c.builtin:
			return fmt.Errorf("cannot jump to built-in chain %s", target)
		case c == nil && !targets[target]:
			return fmt.Errorf("couldn't load target %q: no chain by that name", target)
		}
	}
	for i := 0; i+1 < len(rule); i++ {
		switch rule[i] {
		case "-s", "--source", "-d", "--destination":
			for _, a := range strings.Split(rule[i+1], ",") {
				p, err := parsePrefix(a)
				if err != nil {
					return err
				}
				if p.Addr().Is4() != (fam == iptables.IPv4) {
					return fmt.Errorf("address %s is not %s", a, fam)
				}
			}
		}
	}
	return nil
}

// parsePrefix accepts an address or a prefix.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}
