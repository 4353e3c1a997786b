package iptables

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nodenet/nodenet/datapath/iptables/internal/savefmt"
)

// Manager applies the chains of several owners to one IP family. Each chain
// (table and name) has exactly one owner; each Sync writes only the
// caller's chains, with one iptables-restore per table.
type Manager struct {
	runner Runner
	fam    Family
	log    *slog.Logger

	// mu guards owners and is held for a whole Sync, runner calls
	// included: a payload is computed from the cache, and the cache
	// describes the kernel only if no other Sync ran in between.
	// iptables-restore calls are serialized by the xtables lock anyway.
	mu     sync.Mutex
	owners map[string]*ownerState
}

// ownerState is what the Manager remembers about one owner.
type ownerState struct {
	// prefixes name this owner's chains: kernel chains matching one that
	// the owner does not want are removed on its full sync, even after a
	// restart; no other owner may sync a chain matching them.
	prefixes []string
	// programmed is the content hash of each chain as last written by a
	// successful Sync. nil means the next Sync is full.
	programmed map[chainKey]uint64
	// jumps are the validated jumps of each programmed chain: a chain
	// whose hash is unchanged is not parsed again (at 10,000 services
	// that parse was most of a partial sync).
	jumps map[chainKey][]jump
	// rules are the rule slices the last successful Sync was given: a
	// chain passed again with the very same slice is not hashed again.
	rules map[chainKey]ruleRef
	// claimed are the chains that may be in the kernel on this owner's
	// behalf: the desired set after a success, grown by the desired set
	// after a failure (which chains the failure left behind is unknown).
	claimed map[chainKey]bool
	// rendered is the payload per table of the latest Sync.
	rendered map[Table][]byte
}

type chainKey struct {
	table Table
	name  string
}

func (k chainKey) String() string { return string(k.table) + "/" + k.name }

func compareKeys(a, b chainKey) int {
	if c := strings.Compare(string(a.table), string(b.table)); c != 0 {
		return c
	}
	return strings.Compare(a.name, b.name)
}

// NewManager returns a Manager for one family. log may be nil.
func NewManager(r Runner, fam Family, log *slog.Logger) *Manager {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{runner: r, fam: fam, log: log, owners: map[string]*ownerState{}}
}

// owner returns the state of name, creating it. Callers hold mu.
func (m *Manager) owner(name string) *ownerState {
	o := m.owners[name]
	if o == nil {
		o = &ownerState{claimed: map[chainKey]bool{}}
		m.owners[name] = o
	}
	return o
}

// Register declares the chain-name prefixes of owner (each starting with
// "NODENET-", e.g. "NODENET-SVC-"), replacing earlier ones. On the owner's
// full sync, kernel chains matching a prefix that it does not pass are
// deleted, which is how chains left by an earlier process are cleaned up.
// Prefixes of two owners may not overlap. Registering is optional: an
// owner without prefixes only removes chains it synced in this process.
func (m *Manager) Register(owner string, prefixes ...string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if owner == "" {
		return errors.New("register: empty owner")
	}
	var errs []error
	for _, p := range prefixes {
		if !strings.HasPrefix(p, ChainPrefix) || len(p) == len(ChainPrefix) || len(p) > MaxChainName {
			errs = append(errs, fmt.Errorf("register %s: prefix %q must extend %q and fit in %d characters", owner, p, ChainPrefix, MaxChainName))
			continue
		}
		for _, other := range slices.Sorted(maps.Keys(m.owners)) {
			if other == owner {
				continue
			}
			o := m.owners[other]
			for _, q := range o.prefixes {
				if strings.HasPrefix(p, q) || strings.HasPrefix(q, p) {
					errs = append(errs, fmt.Errorf("register %s: prefix %q overlaps %q of owner %q", owner, p, q, other))
				}
			}
			for k := range o.claimed {
				if strings.HasPrefix(k.name, p) {
					errs = append(errs, fmt.Errorf("register %s: prefix %q matches chain %s of owner %q", owner, p, k, other))
				}
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	m.owner(owner).prefixes = slices.Clone(prefixes)
	return nil
}

// Rendered returns the restore payload per table of owner's latest Sync
// (empty when it had nothing to write). Meant for golden tests.
func (m *Manager) Rendered(owner string) map[Table]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	o := m.owners[owner]
	if o == nil {
		return nil
	}
	out := make(map[Table]string, len(o.rendered))
	for t, p := range o.rendered {
		out[t] = string(p)
	}
	return out
}

// Sync makes the kernel hold exactly chains for owner:
//
//   - a chain owned (synced or registered by prefix) by another owner is an
//     error, as is a rule jumping to a NODENET- chain that chains does not
//     hold in the same table: only its owner jumps into a chain, so
//     deleting it never breaks someone else's rules;
//   - full=false writes only chains whose content changed since the last
//     successful Sync and deletes the owner's chains no longer passed;
//   - full=true (forced for an owner's first Sync and after any failure)
//     reads the kernel first, rewrites every chain of the owner (repairing
//     changes made behind our back), deletes the owner's stale chains
//     found there (see Register) and repairs missing or duplicated hooks.
//
// Each table is applied with one `iptables-restore --noflush`. On any
// failure the cache of owner is dropped, so the next Sync is full.
//
// Sync keeps the rule slices it is given: a caller must not modify one
// afterwards, only pass a new slice for new content. The same slice passed
// again is taken as unchanged without hashing it.
func (m *Manager) Sync(ctx context.Context, owner string, chains []Chain, full bool) error {
	start := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if owner == "" {
		return errors.New("sync: empty owner")
	}
	if m.fam != IPv4 && m.fam != IPv6 {
		return fmt.Errorf("sync %s: invalid family %s", owner, m.fam)
	}
	o := m.owner(owner)
	desired, err := m.desired(o, owner, chains)
	if err != nil {
		return fmt.Errorf("sync %s %s: %w", m.fam, owner, err)
	}
	full = full || o.programmed == nil
	plans, err := m.plan(ctx, o, desired, full)
	if err != nil {
		o.programmed = nil
		return fmt.Errorf("sync %s %s: %w", m.fam, owner, err)
	}
	o.rendered = map[Table][]byte{}
	var errs []error
	var written, removed int
	for _, t := range tableOrder {
		p := plans[t]
		if p.empty() {
			continue
		}
		payload := p.render(t)
		o.rendered[t] = payload
		written, removed = written+len(p.write), removed+len(p.remove)
		if m.log.Enabled(ctx, slog.LevelDebug-4) {
			m.log.Log(ctx, slog.LevelDebug-4, "iptables-restore payload", "family", m.fam, "owner", owner, "table", t, "payload", string(payload))
		}
		if err := m.runner.Restore(ctx, m.fam, payload, true); err != nil {
			errs = append(errs, fmt.Errorf("restore %s table: %w", t, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		o.programmed = nil
		for k := range desired {
			o.claimed[k] = true
		}
		return fmt.Errorf("sync %s %s: %w", m.fam, owner, err)
	}
	o.programmed = make(map[chainKey]uint64, len(desired))
	o.jumps = make(map[chainKey][]jump, len(desired))
	o.rules = make(map[chainKey]ruleRef, len(desired))
	o.claimed = make(map[chainKey]bool, len(desired))
	for k, d := range desired {
		o.programmed[k] = d.hash
		o.jumps[k] = d.jumps
		o.rules[k] = refOf(d.chain.Rules)
		o.claimed[k] = true
	}
	m.log.Debug("iptables sync", "family", m.fam, "owner", owner, "full", full, "chains", len(desired),
		"written", written, "removed", removed, "tables", len(o.rendered), "elapsed", time.Since(start))
	return nil
}

// ruleRef identifies a rule slice by its first element and length.
type ruleRef struct {
	first *Rule
	n     int
}

func refOf(rules []Rule) ruleRef {
	if len(rules) == 0 {
		return ruleRef{}
	}
	return ruleRef{first: &rules[0], n: len(rules)}
}

type desiredChain struct {
	chain Chain
	hash  uint64
	jumps []jump
}

// jump is a rule's jump to a chain of ours.
type jump struct {
	rule   int // 1-based
	target string
}

// desired validates chains for owner o. A chain programmed with the same
// content by o's last Sync was validated then and is not parsed again.
// Callers hold mu.
func (m *Manager) desired(o *ownerState, owner string, chains []Chain) (map[chainKey]desiredChain, error) {
	out := make(map[chainKey]desiredChain, len(chains))
	var errs []error
	for _, c := range chains {
		k := chainKey{c.Table, c.Name}
		d := desiredChain{chain: c}
		if h, ok := o.programmed[k]; ok && len(c.Rules) > 0 && o.rules[k] == refOf(c.Rules) {
			d.hash = h
		} else {
			d.hash = hashChain(c)
		}
		if js, ok := o.jumps[k]; ok && o.programmed[k] == d.hash {
			d.jumps = js
		} else {
			js, err := c.check()
			if err != nil {
				errs = append(errs, err)
				continue
			}
			d.jumps = js
		}
		if _, dup := out[k]; dup {
			errs = append(errs, fmt.Errorf("chain %s given twice", k))
			continue
		}
		if other := m.ownerOf(k, owner); other != "" {
			errs = append(errs, fmt.Errorf("chain %s is owned by %q", k, other))
			continue
		}
		out[k] = d
	}
	for _, c := range chains {
		d, ok := out[chainKey{c.Table, c.Name}]
		if !ok {
			continue // reported above
		}
		for _, j := range d.jumps {
			if _, ok := out[chainKey{c.Table, j.target}]; !ok {
				errs = append(errs, fmt.Errorf("%s %s rule %d jumps to %s, which is not among the chains synced", c.Table, c.Name, j.rule, j.target))
			}
		}
	}
	return out, errors.Join(errs...)
}

// ownerOf returns the owner other than self that claims k or whose prefix
// matches its name, or "". Callers hold mu.
func (m *Manager) ownerOf(k chainKey, self string) string {
	for name, o := range m.owners {
		if name == self {
			continue
		}
		if o.claimed[k] {
			return name
		}
		for _, p := range o.prefixes {
			if strings.HasPrefix(k.name, p) {
				return name
			}
		}
	}
	return ""
}

// hashChain is FNV-1a over table, name and rules, written out so that
// hashing a hundred thousand rules allocates nothing.
func hashChain(c Chain) uint64 {
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	add := func(s string, sep byte) {
		for i := 0; i < len(s); i++ {
			h = (h ^ uint64(s[i])) * prime
		}
		h = (h ^ uint64(sep)) * prime
	}
	add(string(c.Table), 0)
	add(c.Name, 0)
	for _, r := range c.Rules {
		add(string(r), '\n')
	}
	return h
}

// save reads the kernel's tables (all when table is ""). Callers hold mu.
func (m *Manager) save(ctx context.Context, table Table) (*savefmt.Dump, error) {
	out, err := m.runner.Save(ctx, m.fam, table)
	if err != nil {
		return nil, fmt.Errorf("save %s: %w", orAll(table), err)
	}
	d, err := savefmt.Parse(out)
	if err != nil {
		return nil, fmt.Errorf("parse save %s: %w", orAll(table), err)
	}
	return d, nil
}

func orAll(t Table) string {
	if t == "" {
		return "all tables"
	}
	return string(t) + " table"
}
