package ipam

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// leaseFile is one valid-looking lease file found by Open.
type leaseFile struct {
	pool *pool
	addr netip.Addr
	rec  record
}

// load rebuilds the in-memory index from the files under a.dir. Garbage is
// removed with a warning and never fails Open; only being unable to read a
// directory does.
func (a *Allocator) load() error {
	entries, err := os.ReadDir(a.dir)
	if err != nil {
		return err
	}
	var found []leaseFile
	dirty := map[*pool]bool{} // directories in which we removed files
	for _, e := range entries {
		p, ok := parseDirName(e.Name())
		if !ok || !e.IsDir() {
			a.log.Warn("ipam: ignoring unexpected entry in state dir", "path", filepath.Join(a.dir, e.Name()))
			continue
		}
		pl := newPool(p, filepath.Join(a.dir, e.Name()))
		a.pools[p] = pl
		fs, err := a.scan(pl, dirty)
		if err != nil {
			return err
		}
		found = append(found, fs...)
	}
	a.assemble(found, dirty)
	// An address is either leased or orphaned: a lease wins over a file
	// elsewhere that we failed to remove (claiming over that file would
	// fail with EEXIST anyway).
	for addr := range a.orphans {
		if a.byAddr[addr] != nil {
			delete(a.orphans, addr)
		}
	}
	a.recount()
	for _, pl := range a.pools {
		a.loadCursor(pl)
	}
	var errs []error
	for pl := range dirty {
		errs = append(errs, syncDir(pl.dir))
	}
	return errors.Join(errs...)
}

// scan reads one range directory: temporary files and garbage are removed,
// lease files whose record parses and names the file's address are returned.
func (a *Allocator) scan(pl *pool, dirty map[*pool]bool) ([]leaseFile, error) {
	entries, err := os.ReadDir(pl.dir)
	if err != nil {
		return nil, err
	}
	var found []leaseFile
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(pl.dir, name)
		if name == cursorName {
			continue
		}
		if strings.HasPrefix(name, tmpPrefix) {
			a.discard(pl, path, netip.Addr{}, "leftover temporary file", dirty)
			continue
		}
		addr, err := netip.ParseAddr(name)
		if err != nil || addr.String() != name || !pl.leasable(addr) {
			a.discard(pl, path, netip.Addr{}, "not a lease file of this range", dirty)
			continue
		}
		if e.IsDir() {
			// Never remove a directory tree we did not make; just keep
			// away from its address.
			a.log.Warn("ipam: unexpected directory in range dir, keeping its address reserved", "path", path)
			a.orphans[addr] = struct{}{}
			continue
		}
		if !e.Type().IsRegular() {
			a.discard(pl, path, addr, "not a regular file", dirty)
			continue
		}
		data, err := readSmall(path)
		if err != nil {
			// We cannot tell whose it is: keep the address reserved.
			a.log.Error("ipam: cannot read lease file, keeping its address reserved", "path", path, "err", err)
			a.orphans[addr] = struct{}{}
			continue
		}
		rec, err := parseRecord(data)
		if err != nil {
			a.discard(pl, path, addr, err.Error(), dirty)
			continue
		}
		if !slices.Contains(rec.Addrs, netip.PrefixFrom(addr, pl.prefix.Bits())) {
			a.discard(pl, path, addr, "owner record does not list this address", dirty)
			continue
		}
		found = append(found, leaseFile{pool: pl, addr: addr, rec: rec})
	}
	return found, nil
}

// discard removes a garbage file. If that fails and the name is a leasable
// address, the address stays reserved so we never claim over the file.
func (a *Allocator) discard(pl *pool, path string, addr netip.Addr, why string, dirty map[*pool]bool) {
	a.log.Warn("ipam: removing invalid state file", "path", path, "reason", why)
	dirty[pl] = true
	if err := removeFile(path); err != nil {
		a.log.Error("ipam: cannot remove invalid state file", "path", path, "err", err)
		if addr.IsValid() {
			a.orphans[addr] = struct{}{}
		}
	}
}

// assemble groups lease files into allocations. Every file of an allocation
// holds the same record listing all of its addresses, so a group is complete
// when it has one file per listed address. An incomplete group is what a
// crash leaves in the middle of Allocate (nobody was told about it) or
// Release (it was being freed), so its files are removed either way.
func (a *Allocator) assemble(found []leaseFile, dirty map[*pool]bool) {
	type group struct {
		rec   record
		files []leaseFile
	}
	groups := map[string]*group{}
	var order []*group
	for _, f := range found {
		data, err := encodeRecord(f.rec)
		if err != nil { // cannot happen for a parsed record
			a.discard(f.pool, filepath.Join(f.pool.dir, f.addr.String()), f.addr, err.Error(), dirty)
			continue
		}
		g := groups[string(data)]
		if g == nil {
			g = &group{rec: f.rec}
			groups[string(data)] = g
			order = append(order, g)
		}
		g.files = append(g.files, f)
	}
	// Deterministic winner if two complete allocations claim one owner or
	// one address (only possible if someone edited the files): the oldest.
	slices.SortFunc(order, func(x, y *group) int {
		if c := x.rec.Since.Compare(y.rec.Since); c != 0 {
			return c
		}
		return x.rec.Addrs[0].Addr().Compare(y.rec.Addrs[0].Addr())
	})
	for _, g := range order {
		why := ""
		switch {
		case len(g.files) != len(g.rec.Addrs):
			why = "incomplete allocation (interrupted allocate or release)"
		case a.byOwner[ownerKey{g.rec.ContainerID, g.rec.IfName}] != nil:
			why = "second allocation of the same owner"
		default:
			for _, p := range g.rec.Addrs {
				if a.byAddr[p.Addr()] != nil {
					why = "address already held by another allocation"
				}
			}
		}
		if why != "" {
			for _, f := range g.files {
				a.discard(f.pool, filepath.Join(f.pool.dir, f.addr.String()), f.addr, why, dirty)
			}
			continue
		}
		l := &lease{rec: g.rec, pools: make([]*pool, len(g.rec.Addrs))}
		for _, f := range g.files {
			l.pools[slices.Index(g.rec.Addrs, netip.PrefixFrom(f.addr, f.pool.prefix.Bits()))] = f.pool
		}
		a.index(l)
	}
}

// loadCursor restores a pool's cursor; without a usable cursor file it
// starts after the range's newest lease.
func (a *Allocator) loadCursor(pl *pool) {
	c, err := readCursor(pl.dir)
	if err == nil && pl.prefix.Contains(c) {
		pl.cursor = c
		return
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		a.log.Warn("ipam: unusable cursor file, starting after the newest lease", "range", pl.prefix, "err", err)
	}
	var newest *lease
	for _, l := range a.byOwner {
		for i, p := range l.pools {
			if p == pl && (newest == nil || l.rec.Since.After(newest.rec.Since)) {
				newest, pl.cursor = l, l.rec.Addrs[i].Addr()
			}
		}
	}
}

// index adds l to the maps and counters.
func (a *Allocator) index(l *lease) {
	a.byOwner[ownerKey{l.rec.ContainerID, l.rec.IfName}] = l
	for i, p := range l.rec.Addrs {
		a.byAddr[p.Addr()] = l
		l.pools[i].files++
		a.reserve(p.Addr(), 1)
	}
}

func (a *Allocator) unindex(l *lease) {
	delete(a.byOwner, ownerKey{l.rec.ContainerID, l.rec.IfName})
	for i, p := range l.rec.Addrs {
		delete(a.byAddr, p.Addr())
		l.pools[i].files--
		a.reserve(p.Addr(), -1)
	}
}

// orphan reserves an address no lease of ours holds. Invariant: orphans and
// byAddr never share an address.
func (a *Allocator) orphan(addr netip.Addr) {
	if _, ok := a.orphans[addr]; ok || a.byAddr[addr] != nil {
		return
	}
	a.orphans[addr] = struct{}{}
	a.reserve(addr, 1)
}

func (a *Allocator) taken(addr netip.Addr) bool {
	_, orphan := a.orphans[addr]
	return orphan || a.byAddr[addr] != nil
}

// reserve adjusts inUse of every range in which addr is leasable (ranges
// may overlap after a podCIDR change).
func (a *Allocator) reserve(addr netip.Addr, delta int) {
	for _, pl := range a.pools {
		if pl.leasable(addr) {
			pl.inUse = uint64(int64(pl.inUse) + int64(delta))
		}
	}
}

// recount recomputes inUse of every pool from the maps.
func (a *Allocator) recount() {
	for _, pl := range a.pools {
		a.countPool(pl)
	}
}

func (a *Allocator) countPool(pl *pool) {
	pl.inUse = 0
	for addr := range a.byAddr {
		if pl.leasable(addr) {
			pl.inUse++
		}
	}
	for addr := range a.orphans {
		if pl.leasable(addr) {
			pl.inUse++
		}
	}
}
