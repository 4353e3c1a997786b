package iptables

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	// programmed is each chain as last written by a successful Sync.
	// nil means the next Sync is full.
	programmed map[chainKey]programmedChain
	// claimed are the chains that may be in the kernel on this owner's
	// behalf: the desired set after a success, grown by the desired set
	// after a failure (which chains the failure left behind is unknown).
	claimed map[chainKey]bool
	// desired is Sync's scratch map, kept so that its memory is reused:
	// at 10,000 services allocating it (and programmed) anew for every
	// partial sync was a third of the garbage the proxy made.
	desired map[chainKey]desiredChain
	// rendered is the payload per table of the latest Sync, if at most
	// maxKeptPayload bytes.
	rendered map[Table][]byte
}

// programmedChain is what the Manager remembers of a chain it wrote.
type programmedChain struct {
	hash uint64
	// jumps are the chain's validated jumps: a chain whose hash is
	// unchanged is not parsed again (at 10,000 services that parse was
	// most of a partial sync).
	jumps []jump
	// rules is the rule slice the Sync was given: the very same slice
	// passed again is not hashed again.
	rules ruleRef
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

// maxKeptPayload bounds the payloads Rendered can return: they are for
// golden tests, while a cold start's payload at 10,000 Services is 20 MB
// that would stay on the heap until the next Sync.
const maxKeptPayload = 1 << 20

// Rendered returns the restore payload per table of owner's latest Sync
// (empty when it had nothing to write; a payload over 1 MiB is not kept).
// Meant for golden tests.
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
	var written, removed, tables int
	for _, t := range tableOrder {
		p := plans[t]
		if p.empty() {
			continue
		}
		tables++
		written, removed = written+len(p.write), removed+len(p.remove)
		var err error
		if sr, ok := m.runner.(StreamRunner); ok && p.size(t) > maxKeptPayload && !m.log.Enabled(ctx, slog.LevelDebug-4) {
			// Large: streamed, never whole in memory.
			err = sr.RestoreFunc(ctx, m.fam, func(w io.Writer) error { return p.writeTo(w, t) }, true)
		} else {
			payload := p.render(t)
			if len(payload) <= maxKeptPayload {
				o.rendered[t] = payload
			}
			if m.log.Enabled(ctx, slog.LevelDebug-4) {
				m.log.Log(ctx, slog.LevelDebug-4, "iptables-restore payload", "family", m.fam, "owner", owner, "table", t, "payload", string(payload))
			}
			err = m.runner.Restore(ctx, m.fam, payload, true)
		}
		if err != nil {
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
	// desired no longer reads programmed: refill it (and claimed) in place.
	if o.programmed == nil {
		o.programmed = make(map[chainKey]programmedChain, len(desired))
	}
	clear(o.programmed)
	clear(o.claimed)
	for k, d := range desired {
		o.programmed[k] = programmedChain{hash: d.hash, jumps: d.jumps, rules: refOf(d.chain.Rules)}
		o.claimed[k] = true
	}
	m.log.Debug("iptables sync", "family", m.fam, "owner", owner, "full", full, "chains", len(desired),
		"written", written, "removed", removed, "tables", tables, "elapsed", time.Since(start))
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
	if o.desired == nil {
		o.desired = make(map[chainKey]desiredChain, len(chains))
	}
	out := o.desired
	clear(out)
	var errs []error
	for _, c := range chains {
		k := chainKey{c.Table, c.Name}
		d := desiredChain{chain: c}
		p, ok := o.programmed[k]
		if ok && len(c.Rules) > 0 && p.rules == refOf(c.Rules) {
			d.hash = p.hash
		} else {
			d.hash = hashChain(c)
		}
		if ok && p.hash == d.hash {
			d.jumps = p.jumps
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

// save reads the kernel's tables (all when table is ""), handing the rules
// of user-defined chains to userRule if it is not nil (see
// savefmt.ParseFunc). Callers hold mu.
func (m *Manager) save(ctx context.Context, table Table, userRule func(table, chain string, text []byte)) (*savefmt.Dump, error) {
	out, err := m.runner.Save(ctx, m.fam, table)
	if err != nil {
		return nil, fmt.Errorf("save %s: %w", orAll(table), err)
	}
	d, err := savefmt.ParseFunc(out, userRule)
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
