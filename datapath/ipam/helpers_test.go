package ipam

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var (
	v4r  = netip.MustParsePrefix("10.244.1.0/24")
	v6r  = netip.MustParsePrefix("fd00:10:244:1::/64")
	base = time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
)

// testClock ticks one second per call, so Since orders allocations.
func testClock() func() time.Time {
	var n atomic.Int64
	return func() time.Time { return base.Add(time.Duration(n.Add(1)) * time.Second) }
}

func testOptions(t testing.TB) Options {
	return Options{Node: "n1", Clock: testClock(), Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}
}

func open(t testing.TB, dir string, ranges ...netip.Prefix) *Allocator {
	t.Helper()
	a, err := Open(dir, ranges, testOptions(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return a
}

func alloc(t testing.TB, a *Allocator, cid string) Allocation {
	t.Helper()
	al, err := a.Allocate(Owner{ContainerID: cid, IfName: "eth0", Namespace: "ns", Pod: "pod-" + cid})
	if err != nil {
		t.Fatalf("Allocate(%s): %v\n%s", cid, err, dump(a))
	}
	return al
}

func addrsOf(als ...Allocation) []string {
	var out []string
	for _, al := range als {
		for _, p := range al.Addrs {
			out = append(out, p.String())
		}
	}
	return out
}

// dump renders the in-memory index, sorted, for failure messages.
func dump(a *Allocator) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var lines []string
	for _, pl := range a.pools {
		lines = append(lines, fmt.Sprintf("range %s inUse=%d files=%d cursor=%s", pl.prefix, pl.inUse, pl.files, pl.cursor))
	}
	for addr, l := range a.byAddr {
		lines = append(lines, fmt.Sprintf("lease %s %s/%s", addr, l.rec.ContainerID, l.rec.IfName))
	}
	for addr := range a.orphans {
		lines = append(lines, fmt.Sprintf("orphan %s", addr))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// diskLeases lists the lease file names (addresses) in every range
// directory under dir, as "range-dir/addr".
func diskLeases(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	ranges, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range ranges {
		if !r.IsDir() {
			continue
		}
		files, err := os.ReadDir(filepath.Join(dir, r.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if f.Name() != cursorName {
				out = append(out, r.Name()+"/"+f.Name())
			}
		}
	}
	return out
}

// checkInvariants verifies that no address has two owners and that the
// counters agree with the maps.
func checkInvariants(t testing.TB, a *Allocator) {
	t.Helper()
	seen := map[netip.Addr]string{}
	for _, al := range a.List() {
		for _, p := range al.Addrs {
			if prev, ok := seen[p.Addr()]; ok {
				t.Errorf("address %s held by %s and %s", p.Addr(), prev, al.ContainerID)
			}
			seen[p.Addr()] = al.ContainerID
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, pl := range a.pools {
		want := pl.inUse
		a.countPool(pl)
		if pl.inUse != want {
			t.Errorf("range %s: inUse %d, recount says %d", pl.prefix, want, pl.inUse)
		}
	}
}

// cmpOpts compares netip values by ==.
var cmpOpts = cmp.Options{cmpopts.EquateComparable(netip.Prefix{}, netip.Addr{})}
