package iptables

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/nodenet/nodenet/datapath/iptables/internal/savefmt"
)

// tablePlan is what one Sync does to one table.
type tablePlan struct {
	write  []Chain      // declared (so created or flushed), then filled
	remove []string     // declared (so flushed), then deleted
	unhook []string     // "-D" arguments: built-in rules jumping to removed chains, duplicate hooks
	hook   []hookInsert // hooks to insert, in this order
}

// hookInsert is one "-I BUILTIN pos" of a missing hook.
type hookInsert struct {
	hook Hook
	pos  int // 1-based, in the built-in chain as it is when this insert runs
}

func (p *tablePlan) empty() bool {
	return p == nil || len(p.write)+len(p.remove)+len(p.unhook)+len(p.hook) == 0
}

// plan decides what to write for owner o. Callers hold mu.
func (m *Manager) plan(ctx context.Context, o *ownerState, desired map[chainKey]desiredChain, full bool) (map[Table]*tablePlan, error) {
	plans := map[Table]*tablePlan{}
	get := func(t Table) *tablePlan {
		if plans[t] == nil {
			plans[t] = &tablePlan{}
		}
		return plans[t]
	}
	// kernel holds the tables read with Save; a table missing from a dump
	// is stored as nil (no chains, no rules).
	kernel := map[Table]*savefmt.Table{}
	stale := map[chainKey]bool{}
	// A full sync rewrites what differs from the kernel, not everything:
	// at 10,000 Services rewriting every chain took seconds each minute.
	// The kernel's rules of our chains are compared while being read, so
	// that none of them is kept.
	inKernel := map[chainKey]*kernelChain{}
	if full {
		var last *kernelChain
		var lastKey chainKey
		d, err := m.save(ctx, "", func(table, chain string, text []byte) {
			k := chainKey{Table(table), chain}
			if last == nil || k != lastKey {
				lastKey, last = k, inKernel[k]
				if last == nil {
					d, want := desired[k]
					last = &kernelChain{same: want, want: d.chain.Rules}
					inKernel[k] = last
				}
			}
			i := last.rules
			last.rules++
			if last.same {
				last.same = i < len(last.want) && sameRule(last.want[i], text)
			}
		})
		if err != nil {
			return nil, err
		}
		for _, t := range tableOrder {
			kt := d.Tables[string(t)]
			kernel[t] = kt
			if kt == nil {
				continue
			}
			for _, c := range kt.Chains {
				k := chainKey{t, c.Name}
				if _, want := desired[k]; want || (!o.claimed[k] && !matchesAny(c.Name, o.prefixes)) {
					continue
				}
				stale[k] = true
			}
		}
	} else {
		// Without a Save, a chain we remember is removed whether or not it
		// still exists: declaring it first makes -X succeed either way.
		need := map[Table]bool{}
		for k := range o.claimed {
			if _, want := desired[k]; !want {
				stale[k] = true
				if len(hooksFor(k.table, k.name)) > 0 {
					need[k.table] = true
				}
			}
		}
		// A hook is inserted only after checking the kernel, so it is
		// never duplicated; unchanged hook chains keep theirs until the
		// next full sync checks again.
		for k := range desired {
			if len(hooksFor(k.table, k.name)) > 0 {
				if _, had := o.programmed[k]; !had {
					need[k.table] = true
				}
			}
		}
		for _, t := range tableOrder {
			if !need[t] {
				continue
			}
			d, err := m.save(ctx, t, func(string, string, []byte) {})
			if err != nil {
				return nil, err
			}
			kernel[t] = d.Tables[string(t)]
		}
	}

	declared := map[chainKey]bool{}
	if full {
		for t, kt := range kernel {
			if kt == nil {
				continue
			}
			for _, c := range kt.Chains {
				declared[chainKey{t, c.Name}] = true
			}
		}
	}
	for _, k := range slices.SortedFunc(maps.Keys(desired), compareKeys) {
		d := desired[k]
		if full && declared[k] && inKernel[k].holds(d.chain.Rules) {
			continue
		}
		if p, ok := o.programmed[k]; full || !ok || p.hash != d.hash {
			get(k.table).write = append(get(k.table).write, d.chain)
		}
	}
	for _, k := range slices.SortedFunc(maps.Keys(stale), compareKeys) {
		get(k.table).remove = append(get(k.table).remove, k.name)
	}
	for _, t := range tableOrder {
		kt, read := kernel[t]
		if !read {
			continue
		}
		p := get(t)
		builtin := map[string]bool{}
		var rules []savefmt.Rule
		if kt != nil {
			for _, c := range kt.Chains {
				builtin[c.Name] = c.Policy != "-"
			}
			rules = kt.Rules
		}
		// Rules in built-in chains that jump to a chain being removed: our
		// hooks, or jumps from an older nodenet. -X would fail on them.
		var deleted []savefmt.Rule
		for _, r := range rules {
			if target, _ := savefmt.Target(r.Args); builtin[r.Chain] && stale[chainKey{t, target}] {
				p.unhook = append(p.unhook, r.Chain+" "+r.Text)
				deleted = append(deleted, r)
			}
		}
		var missing []Hook
		for _, k := range slices.SortedFunc(maps.Keys(desired), compareKeys) {
			if k.table != t {
				continue
			}
			for _, h := range hooksFor(k.table, k.name) {
				n := 0
				for _, r := range rules {
					if h.isHookRule(r) {
						if n++; n > 1 {
							p.unhook = append(p.unhook, r.Chain+" "+r.Text)
							deleted = append(deleted, r)
						}
					}
				}
				if n == 0 {
					missing = append(missing, h)
				}
			}
		}
		p.hook = placeHooks(t, rules, builtin, deleted, missing)
	}
	return plans, nil
}

// kernelChain is what a full sync learnt of a user-defined chain's rules
// in the kernel: how many there are, and whether each so far was the
// desired rule at its position.
type kernelChain struct {
	rules int
	same  bool
	want  []Rule // the desired rules (none when the chain is not desired)
}

// holds reports whether the kernel's chain (nil: no rules) has exactly
// the rules want.
func (k *kernelChain) holds(want []Rule) bool {
	if k == nil {
		return len(want) == 0
	}
	return k.same && k.rules == len(want)
}

// sameRule reports whether the kernel's rule, as iptables-save printed
// it, is want. A rule we spell differently from iptables-save reads as
// different: its chain is rewritten, which is always safe.
func sameRule(want Rule, printed []byte) bool {
	if string(want) == string(printed) {
		return true // spelled as iptables-save prints it: no need to split
	}
	args, err := want.args()
	if err != nil {
		return false
	}
	kargs, err := savefmt.Split(string(printed))
	return err == nil && slices.Equal(args, kargs)
}

// placeHooks orders the missing hooks of table t and computes their
// insert positions, so that our hooks in a built-in chain keep the order of
// the fixed list whatever the order they were added in. It replays the
// payload on the built-in chains as read: the "-D" of deleted rules (which,
// like iptables, remove the first rule with the same text), then each
// insert in turn.
func placeHooks(t Table, rules []savefmt.Rule, builtin map[string]bool, deleted []savefmt.Rule, missing []Hook) []hookInsert {
	if len(missing) == 0 {
		return nil
	}
	type entry struct {
		hook int // index in hooks, -1 for a rule that is not ours
		text string
	}
	chains := map[string][]entry{}
	for _, r := range rules {
		if !builtin[r.Chain] {
			continue
		}
		e := entry{hook: -1, text: r.Text}
		for i, h := range hooks {
			if h.Table == t && h.isHookRule(r) {
				e.hook = i
				break
			}
		}
		chains[r.Chain] = append(chains[r.Chain], e)
	}
	for _, d := range deleted {
		list := chains[d.Chain]
		if i := slices.IndexFunc(list, func(e entry) bool { return e.text == d.Text }); i >= 0 {
			chains[d.Chain] = slices.Delete(list, i, i+1)
		}
	}
	slices.SortFunc(missing, func(a, b Hook) int { return hookIndex(a) - hookIndex(b) })
	out := make([]hookInsert, 0, len(missing))
	for _, h := range missing {
		idx := hookIndex(h)
		list := chains[h.BuiltIn]
		at := slices.IndexFunc(list, func(e entry) bool { return e.hook > idx })
		if at < 0 {
			at = 0
			for i, e := range list {
				if e.hook >= 0 && e.hook < idx {
					at = i + 1
				}
			}
		}
		chains[h.BuiltIn] = slices.Insert(list, at, entry{hook: idx})
		out = append(out, hookInsert{hook: h, pos: at + 1})
	}
	return out
}

func matchesAny(name string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// render writes the restore payload of one table. Order matters, and all
// of it is one transaction:
//
//  1. ":CHAIN - [0:0]" for every chain written or removed. In a --noflush
//     restore, declaring a user chain creates it if missing and FLUSHES it
//     if present (checked with iptables 1.8.9, legacy and nft), so no -F
//     is needed, a rewritten chain holds exactly the new rules, and a
//     removed chain no longer jumps anywhere.
//  2. "-D" of built-in rules jumping to removed chains.
//  3. "-A" of the written chains' rules.
//  4. "-X" of removed chains: nothing references them any more (our own
//     chains jump only to chains of the same owner that are still wanted,
//     see Sync), and -X of an empty unreferenced chain succeeds.
//  5. "-I BUILTIN pos" of missing hooks, once their target exists
//     (pos is 1 unless other hooks of ours are in that chain, see hooks).
func (p *tablePlan) render(t Table) []byte {
	// Sized up front and written piece by piece: at 10,000 Services a
	// cold start's payload is 20 MB, and growing it (or concatenating
	// each line) cost as much memory again.
	b := bytes.NewBuffer(make([]byte, 0, p.size(t)))
	_ = p.writeTo(b, t) // a bytes.Buffer does not fail
	return b.Bytes()
}

// size is the length of the payload render returns.
func (p *tablePlan) size(t Table) int {
	n := len(t) + 9
	for _, c := range p.write {
		n += len(c.Name) + 10
		for _, r := range c.Rules {
			n += len(c.Name) + len(strings.TrimSpace(string(r))) + 5
		}
	}
	for _, name := range p.remove {
		n += 2*len(name) + 14
	}
	for _, args := range p.unhook {
		n += len(args) + 4
	}
	for _, h := range p.hook {
		n += len(h.hook.BuiltIn) + len(strconv.Itoa(h.pos)) + len(h.hook.args()) + 6
	}
	return n
}

// writeTo writes the payload (see render) to w.
func (p *tablePlan) writeTo(w io.Writer, t Table) error {
	b, ok := w.(interface {
		io.Writer
		io.StringWriter
		io.ByteWriter
	})
	if !ok {
		b = bufio.NewWriter(w)
	}
	line := func(parts ...string) {
		for _, s := range parts {
			b.WriteString(s)
		}
		b.WriteByte('\n')
	}
	line("*", string(t))
	for _, c := range p.write {
		line(":", c.Name, " - [0:0]")
	}
	for _, name := range p.remove {
		line(":", name, " - [0:0]")
	}
	for _, args := range p.unhook {
		line("-D ", args)
	}
	for _, c := range p.write {
		for _, r := range c.Rules {
			line("-A ", c.Name, " ", strings.TrimSpace(string(r)))
		}
	}
	for _, name := range p.remove {
		line("-X ", name)
	}
	for _, h := range p.hook {
		line("-I ", h.hook.BuiltIn, " ", strconv.Itoa(h.pos), " ", h.hook.args())
	}
	line("COMMIT")
	if f, ok := b.(interface{ Flush() error }); ok {
		return f.Flush()
	}
	return nil
}
