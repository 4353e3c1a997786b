package iptables

import (
	"context"
	"maps"
	"slices"
	"strings"

	"github.com/nodenet/nodenet/datapath/iptables/internal/savefmt"
)

// tablePlan is what one Sync does to one table.
type tablePlan struct {
	write  []Chain  // declared (so created or flushed), then filled
	remove []string // declared (so flushed), then deleted
	unhook []string // "-D" arguments: built-in rules jumping to removed chains, duplicate hooks
	hook   []Hook   // hooks to insert at position 1
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
	if full {
		d, err := m.save(ctx, "")
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
				if _, ok := hookFor(k.table, k.name); ok {
					need[k.table] = true
				}
			}
		}
		// A hook is inserted only after checking the kernel, so it is
		// never duplicated; unchanged hook chains keep theirs until the
		// next full sync checks again.
		for k := range desired {
			if _, ok := hookFor(k.table, k.name); ok {
				if _, had := o.programmed[k]; !had {
					need[k.table] = true
				}
			}
		}
		for _, t := range tableOrder {
			if !need[t] {
				continue
			}
			d, err := m.save(ctx, t)
			if err != nil {
				return nil, err
			}
			kernel[t] = d.Tables[string(t)]
		}
	}

	for _, k := range slices.SortedFunc(maps.Keys(desired), compareKeys) {
		if d := desired[k]; full || o.programmed[k] != d.hash {
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
		for _, r := range rules {
			if target, _ := savefmt.Target(r.Args); builtin[r.Chain] && stale[chainKey{t, target}] {
				p.unhook = append(p.unhook, r.Chain+" "+r.Text)
			}
		}
		for _, k := range slices.SortedFunc(maps.Keys(desired), compareKeys) {
			h, ok := hookFor(k.table, k.name)
			if !ok || k.table != t {
				continue
			}
			n := 0
			for _, r := range rules {
				if h.isHookRule(r) {
					if n++; n > 1 {
						p.unhook = append(p.unhook, r.Chain+" "+r.Text)
					}
				}
			}
			if n == 0 {
				p.hook = append(p.hook, h)
			}
		}
	}
	return plans, nil
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
//  5. "-I BUILTIN 1" of missing hooks, once their target exists.
func (p *tablePlan) render(t Table) string {
	var b strings.Builder
	b.WriteString("*" + string(t) + "\n")
	for _, c := range p.write {
		b.WriteString(":" + c.Name + " - [0:0]\n")
	}
	for _, name := range p.remove {
		b.WriteString(":" + name + " - [0:0]\n")
	}
	for _, args := range p.unhook {
		b.WriteString("-D " + args + "\n")
	}
	for _, c := range p.write {
		for _, r := range c.Rules {
			b.WriteString("-A " + c.Name + " " + strings.TrimSpace(string(r)) + "\n")
		}
	}
	for _, name := range p.remove {
		b.WriteString("-X " + name + "\n")
	}
	for _, h := range p.hook {
		b.WriteString("-I " + h.BuiltIn + " 1 " + h.args() + "\n")
	}
	b.WriteString("COMMIT\n")
	return b.String()
}
