// Package ipam allocates pod addresses from the node's podCIDRs. The daemon
// owns it: the CNI plugin forwards ADD/DEL/GC over the control socket and the
// daemon calls Allocate/Release/GC here.
//
// State lives in one file per leased address under a state directory and is
// crash-safe: a kill -9 at any instant loses no completed allocation and never
// leaves one address with two owners. See README.md for the layout and the
// argument.
package ipam

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// ErrExhausted is matched (errors.Is) by the error Allocate returns when a
// range has no free address left.
var ErrExhausted = errors.New("ipam: range exhausted")

// Owner identifies the attachment an allocation belongs to. (ContainerID,
// IfName) is the key; the pod fields are informational.
type Owner struct {
	ContainerID string
	IfName      string
	Namespace   string // pod namespace, may be ""
	Pod         string // pod name, may be ""
}

// Allocation is the set of addresses leased to one owner.
type Allocation struct {
	Owner
	// Addrs are the pod addresses with their range's prefix length, e.g.
	// 10.244.1.5/24; one per family, IPv4 first.
	Addrs []netip.Prefix
	Since time.Time
}

// RangeUsage reports one range.
type RangeUsage struct {
	Range netip.Prefix
	// Used counts leased addresses inside Range. Free is the number of
	// addresses still leasable; it saturates at math.MaxUint64 for IPv6
	// ranges larger than a /64 (a /64 has exactly 2^64-2 leasable addresses,
	// which fits). A stale range has Free 0 and Used counts the leases
	// still held in it.
	Used, Free uint64
	Stale      bool // no longer one of the configured ranges
}

// Options configure an Allocator.
type Options struct {
	Node   string           // for error messages
	Clock  func() time.Time // nil = time.Now
	Logger *slog.Logger     // nil = slog.Default()
}

// Allocator hands out pod addresses. It is safe for concurrent use. Only one
// Allocator may use a state directory at a time.
type Allocator struct {
	dir   string
	node  string
	clock func() time.Time
	log   *slog.Logger
	// claimHook is a test seam: when set it runs before each lease file is
	// claimed, and an error from it fails the claim.
	claimHook func(netip.Addr) error

	// mu guards every field below and serialises all writes under dir: the
	// in-memory index is what says which addresses are free, so it changes
	// in the same critical section as the files.
	mu      sync.Mutex
	ranges  []*pool                // configured, IPv4 first
	pools   map[netip.Prefix]*pool // every range with a directory: configured and stale
	byOwner map[ownerKey]*lease
	byAddr  map[netip.Addr]*lease
	// orphans are addresses reserved although no lease of ours holds them:
	// lease files we could not read or remove, or that appeared behind our
	// back. Open rebuilds this from the files.
	orphans map[netip.Addr]struct{}
}

type ownerKey struct{ containerID, ifName string }

// lease is one allocation in memory.
type lease struct {
	rec   record
	pools []*pool // pools[i] holds the lease file of rec.Addrs[i]
}

func (l *lease) path(i int) string {
	return filepath.Join(l.pools[i].dir, l.rec.Addrs[i].Addr().String())
}

func (l *lease) allocation() Allocation {
	return Allocation{Owner: l.rec.owner(), Addrs: slices.Clone(l.rec.Addrs), Since: l.rec.Since}
}

// Open loads the allocations stored under dir (creating it if needed),
// removing temporary files and garbage left by a crash, and configures ranges.
func Open(dir string, ranges []netip.Prefix, opts Options) (*Allocator, error) {
	rs, err := validateRanges(ranges)
	if err != nil {
		return nil, err
	}
	a := &Allocator{
		dir:     dir,
		node:    opts.Node,
		clock:   opts.Clock,
		log:     opts.Logger,
		pools:   map[netip.Prefix]*pool{},
		byOwner: map[ownerKey]*lease{},
		byAddr:  map[netip.Addr]*lease{},
		orphans: map[netip.Addr]struct{}{},
	}
	if a.clock == nil {
		a.clock = time.Now
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	start := time.Now()
	if err := createDir(dir); err != nil {
		return nil, fmt.Errorf("ipam: create state dir: %w", err)
	}
	if err := a.load(); err != nil {
		return nil, fmt.Errorf("ipam: load state from %s: %w", dir, err)
	}
	if err := a.setRanges(rs); err != nil {
		return nil, err
	}
	a.log.Debug("ipam: opened", "dir", dir, "ranges", rs, "allocations", len(a.byOwner),
		"orphans", len(a.orphans), "elapsed", time.Since(start))
	return a, nil
}

// SetRanges replaces the configured ranges, e.g. when the node's podCIDRs
// change. Allocations outside the new ranges stay (their pods still use
// them) and are reported as stale by Usage; nothing new comes from them. On
// error the old ranges stay configured.
func (a *Allocator) SetRanges(ranges []netip.Prefix) error {
	rs, err := validateRanges(ranges)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.setRanges(rs)
}

func (a *Allocator) setRanges(rs []netip.Prefix) error {
	var configured, created []*pool
	for _, p := range rs {
		pl := a.pools[p]
		if pl == nil {
			pl = newPool(p, filepath.Join(a.dir, dirName(p)))
			if err := os.Mkdir(pl.dir, 0o755); err != nil {
				return fmt.Errorf("ipam: create directory for range %s: %w", p, err)
			}
			created = append(created, pl)
		}
		configured = append(configured, pl)
	}
	if len(created) > 0 {
		if err := syncDir(a.dir); err != nil {
			return fmt.Errorf("ipam: set ranges: %w", err)
		}
	}
	for _, pl := range created {
		a.pools[pl.prefix] = pl
		a.countPool(pl)
	}
	a.ranges = configured
	return nil
}

// Ranges returns the configured ranges, IPv4 first.
func (a *Allocator) Ranges() []netip.Prefix {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]netip.Prefix, len(a.ranges))
	for i, pl := range a.ranges {
		out[i] = pl.prefix
	}
	return out
}

// Gateways returns the gateway of each configured range (its first usable
// address, on the node's pod bridge) with the range's prefix length.
func (a *Allocator) Gateways() []netip.Prefix {
	rs := a.Ranges()
	for i, p := range rs {
		rs[i] = netip.PrefixFrom(gateway(p), p.Bits())
	}
	return rs
}

func (o Owner) validate() error {
	var errs []error
	if o.ContainerID == "" {
		errs = append(errs, errors.New("empty container ID"))
	}
	if o.IfName == "" {
		errs = append(errs, errors.New("empty interface name"))
	}
	return errors.Join(errs...)
}

// Allocate leases one address from each configured range to o. It is
// idempotent: if (ContainerID, IfName) already holds an allocation, that one
// is returned unchanged, even if the ranges changed since. Either every
// family is leased or none is.
func (a *Allocator) Allocate(o Owner) (Allocation, error) {
	if err := o.validate(); err != nil {
		return Allocation{}, fmt.Errorf("ipam: allocate: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if l := a.byOwner[ownerKey{o.ContainerID, o.IfName}]; l != nil {
		return l.allocation(), nil
	}
	if len(a.ranges) == 0 {
		return Allocation{}, fmt.Errorf("ipam: allocate for %s/%s: node %s has no pod ranges", o.ContainerID, o.IfName, a.node)
	}
	for {
		rec := record{
			Version:     recordVersion,
			ContainerID: o.ContainerID,
			IfName:      o.IfName,
			Namespace:   o.Namespace,
			Pod:         o.Pod,
			Since:       a.clock().Round(0).UTC(),
		}
		for _, pl := range a.ranges {
			addr, ok := pl.next(a.taken)
			if !ok {
				return Allocation{}, &exhaustedError{rng: pl.prefix, node: a.node, used: pl.inUse}
			}
			rec.Addrs = append(rec.Addrs, netip.PrefixFrom(addr, pl.prefix.Bits()))
		}
		l := &lease{rec: rec, pools: slices.Clone(a.ranges)}
		err := a.commit(l)
		if taken, ok := errors.AsType[*takenError](err); ok {
			// Someone else's file holds this address; it can only be
			// garbage we could not remove or another writer. Keep away
			// from it and pick again: every round reserves one more
			// address, so this ends, at the latest in ErrExhausted.
			a.log.Warn("ipam: address already claimed on disk, skipping it", "addr", taken.addr)
			a.orphan(taken.addr)
			continue
		}
		if err != nil {
			return Allocation{}, fmt.Errorf("ipam: allocate for %s/%s: %w", o.ContainerID, o.IfName, err)
		}
		a.index(l)
		return l.allocation(), nil
	}
}

type takenError struct{ addr netip.Addr }

func (e *takenError) Error() string { return fmt.Sprintf("address %s already claimed on disk", e.addr) }

type exhaustedError struct {
	rng  netip.Prefix
	node string
	used uint64
}

func (e *exhaustedError) Error() string {
	return fmt.Sprintf("ipam: no free address in %s on node %s (%d in use)", e.rng, e.node, e.used)
}

func (e *exhaustedError) Unwrap() error { return ErrExhausted }

// commit writes l's lease files, then the cursors, then fsyncs the range
// directories. On any error it removes what it wrote, so the allocation is
// all or nothing on disk as well as in memory.
func (a *Allocator) commit(l *lease) error {
	data, err := encodeRecord(l.rec)
	if err != nil {
		return err
	}
	var written []int
	fail := func(err error) error {
		return errors.Join(err, a.rollback(l, written))
	}
	for i, p := range l.rec.Addrs {
		addr := p.Addr()
		if a.claimHook != nil {
			if err := a.claimHook(addr); err != nil {
				return fail(fmt.Errorf("claim lease %s: %w", addr, err))
			}
		}
		linked, err := claim(l.pools[i].dir, addr.String(), data)
		if linked {
			written = append(written, i)
		}
		if errors.Is(err, errTaken) {
			if rerr := a.rollback(l, written); rerr != nil {
				return fmt.Errorf("%s already claimed on disk: %w", addr, rerr)
			}
			return &takenError{addr: addr}
		}
		if err != nil {
			return fail(err)
		}
	}
	// The cursor is written before the directory fsync so that one fsync
	// makes both names durable.
	for i, p := range l.rec.Addrs {
		if err := writeCursor(l.pools[i].dir, p.Addr()); err != nil {
			return fail(fmt.Errorf("range %s: %w", l.pools[i].prefix, err))
		}
		l.pools[i].cursor = p.Addr()
	}
	for _, pl := range l.pools {
		if err := syncDir(pl.dir); err != nil {
			return fail(err)
		}
	}
	return nil
}

// rollback removes the lease files of l listed in idx. An address whose file
// cannot be removed stays reserved as an orphan until the next Open, which
// discards the file as an incomplete allocation.
func (a *Allocator) rollback(l *lease, idx []int) error {
	var errs []error
	for _, i := range idx {
		if err := removeFile(l.path(i)); err != nil {
			a.orphan(l.rec.Addrs[i].Addr())
			errs = append(errs, fmt.Errorf("roll back %s: %w", l.rec.Addrs[i].Addr(), err))
			continue
		}
		if err := syncDir(l.pools[i].dir); err != nil {
			errs = append(errs, fmt.Errorf("roll back %s: %w", l.rec.Addrs[i].Addr(), err))
		}
	}
	return errors.Join(errs...)
}

// Get returns the allocation of (containerID, ifName), if any.
func (a *Allocator) Get(containerID, ifName string) (Allocation, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if l := a.byOwner[ownerKey{containerID, ifName}]; l != nil {
		return l.allocation(), true
	}
	return Allocation{}, false
}

// Release frees the allocation of (containerID, ifName). Unknown owners are
// not an error: (false, nil). On error the allocation stays listed and a
// retry finishes the job.
func (a *Allocator) Release(containerID, ifName string) (bool, error) {
	if err := (Owner{ContainerID: containerID, IfName: ifName}).validate(); err != nil {
		return false, fmt.Errorf("ipam: release: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	l := a.byOwner[ownerKey{containerID, ifName}]
	if l == nil {
		return false, nil
	}
	if err := a.remove(l); err != nil {
		return false, fmt.Errorf("ipam: release %s/%s: %w", containerID, ifName, err)
	}
	return true, nil
}

// remove deletes l's files and, if that worked, forgets l.
func (a *Allocator) remove(l *lease) error {
	var errs []error
	for i := range l.rec.Addrs {
		if err := removeFile(l.path(i)); err != nil {
			errs = append(errs, err)
		}
	}
	for _, pl := range uniq(l.pools) {
		if err := syncDir(pl.dir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	a.unindex(l)
	return nil
}

func uniq(pools []*pool) []*pool {
	if len(pools) == 2 && pools[0] == pools[1] {
		return pools[:1]
	}
	return pools
}

// List returns every allocation, sorted by first address.
func (a *Allocator) List() []Allocation {
	a.mu.Lock()
	out := make([]Allocation, 0, len(a.byOwner))
	for _, l := range a.byOwner {
		out = append(out, l.allocation())
	}
	a.mu.Unlock()
	slices.SortFunc(out, func(x, y Allocation) int { return x.Addrs[0].Addr().Compare(y.Addrs[0].Addr()) })
	return out
}

// GC releases every allocation for which keep returns false and returns the
// released ones. keep is called without the lock held, so it may call back
// into the Allocator; an allocation released or replaced meanwhile is left
// alone. Failures are gathered; the rest is still released.
func (a *Allocator) GC(keep func(Allocation) bool) ([]Allocation, error) {
	if keep == nil {
		return nil, errors.New("ipam: gc: nil keep function")
	}
	var drop []Allocation
	for _, al := range a.List() {
		if !keep(al) {
			drop = append(drop, al)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var released []Allocation
	var errs []error
	for _, al := range drop {
		l := a.byOwner[ownerKey{al.ContainerID, al.IfName}]
		if l == nil || !l.rec.Since.Equal(al.Since) || !slices.Equal(l.rec.Addrs, al.Addrs) {
			continue
		}
		if err := a.remove(l); err != nil {
			errs = append(errs, fmt.Errorf("release %s/%s: %w", al.ContainerID, al.IfName, err))
			continue
		}
		released = append(released, al)
	}
	if err := errors.Join(errs...); err != nil {
		return released, fmt.Errorf("ipam: gc: %w", err)
	}
	return released, nil
}

// Usage reports the configured ranges, IPv4 first, then the stale ranges
// that still hold leases.
func (a *Allocator) Usage() []RangeUsage {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []RangeUsage
	for _, pl := range a.ranges {
		out = append(out, RangeUsage{Range: pl.prefix, Used: pl.inUse, Free: capacity(pl.prefix) - pl.inUse})
	}
	var stale []RangeUsage
	for _, pl := range a.pools {
		if pl.files > 0 && !slices.Contains(a.ranges, pl) {
			stale = append(stale, RangeUsage{Range: pl.prefix, Used: uint64(pl.files), Stale: true})
		}
	}
	slices.SortFunc(stale, func(x, y RangeUsage) int { return comparePrefix(x.Range, y.Range) })
	return append(out, stale...)
}

func comparePrefix(x, y netip.Prefix) int {
	if c := x.Addr().Compare(y.Addr()); c != 0 {
		return c
	}
	return x.Bits() - y.Bits()
}
