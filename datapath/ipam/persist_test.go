package ipam

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestReopen(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, v4r, v6r)
	for i := range 4 {
		alloc(t, a, fmt.Sprint("c", i))
	}
	if _, err := a.Release("c3", "eth0"); err != nil {
		t.Fatal(err)
	}
	b := open(t, dir, v4r, v6r)
	if diff := cmp.Diff(a.List(), b.List(), cmpOpts); diff != "" {
		t.Errorf("List after reopen (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(a.Usage(), b.Usage(), cmpOpts); diff != "" {
		t.Errorf("Usage after reopen (-before +after):\n%s", diff)
	}
	// The cursor survived: .5 (c3's, released) is not handed out again.
	if got, want := addrsOf(alloc(t, b, "c4")), []string{"10.244.1.6/24", "fd00:10:244:1::6/64"}; !cmp.Equal(got, want, cmpOpts) {
		t.Errorf("after reopen got %v, want %v", got, want)
	}
	checkInvariants(t, b)
}

// TestCursorFallback: without a usable cursor the search starts after the
// newest lease.
func TestCursorFallback(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, v4r)
	for i := range 3 {
		alloc(t, a, fmt.Sprint("c", i))
	}
	if _, err := a.Release("c2", "eth0"); err != nil {
		t.Fatal(err)
	}
	cursor := filepath.Join(dir, dirName(v4r), cursorName)
	for _, content := range []string{"", "garbage", "10.9.9.9"} {
		if err := os.WriteFile(cursor, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		b := open(t, dir, v4r)
		if got, want := addrsOf(alloc(t, b, "new")), []string{"10.244.1.4/24"}; !cmp.Equal(got, want, cmpOpts) {
			t.Errorf("cursor %q: got %v, want %v", content, got, want)
		}
		if _, err := b.Release("new", "eth0"); err != nil {
			t.Fatal(err)
		}
	}
}

// TestGarbage plants every kind of junk a crash or a human can leave and
// checks that Open keeps the valid leases, removes the junk and stays clean.
func TestGarbage(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, v4r, v6r)
	keep := alloc(t, a, "keep")
	gone := alloc(t, a, "gone")
	d4 := filepath.Join(dir, dirName(v4r))
	d6 := filepath.Join(dir, dirName(v6r))
	// An interrupted release: the IPv4 file of "gone" is already removed.
	if err := os.Remove(filepath.Join(d4, gone.Addrs[0].Addr().String())); err != nil {
		t.Fatal(err)
	}
	valid, err := encodeRecord(record{Version: 1, ContainerID: "x", IfName: "eth0", Since: base,
		Addrs: []netip.Prefix{netip.MustParsePrefix("10.244.1.50/24")}})
	if err != nil {
		t.Fatal(err)
	}
	write := func(path, content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(d4, ".tmp-123"), string(valid))                       // crash before link
	write(filepath.Join(d4, "10.244.1.77"), "{not json")                      // torn or corrupt
	write(filepath.Join(d4, "10.244.1.78"), string(valid))                    // record names another address
	write(filepath.Join(d4, "10.244.1.1"), string(valid))                     // the gateway
	write(filepath.Join(d4, "10.244.1.255"), string(valid))                   // broadcast
	write(filepath.Join(d4, "10.9.0.5"), string(valid))                       // outside the range
	write(filepath.Join(d4, "junk"), "x")                                     // not an address
	write(filepath.Join(d4, "10.244.001.9"), string(valid))                   // not canonical
	write(filepath.Join(d6, "fd00:10:244:1::99"), `{"version":1,"addrs":[]}`) // invalid record
	write(filepath.Join(dir, "README"), "human notes")                        // left alone
	if err := os.Symlink("/etc/passwd", filepath.Join(d4, "10.244.1.60")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "not-a-range"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(d4, "10.244.1.61"), 0o755); err != nil {
		t.Fatal(err)
	}
	huge := make([]byte, maxRecordSize+10)
	write(filepath.Join(d4, "10.244.1.62"), string(huge))

	b := open(t, dir, v4r, v6r)
	if diff := cmp.Diff([]Allocation{keep}, b.List(), cmpOpts); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	want := []string{
		dirName(v4r) + "/" + keep.Addrs[0].Addr().String(),
		dirName(v4r) + "/10.244.1.61", // a directory: never removed, its address stays reserved
		dirName(v6r) + "/" + keep.Addrs[1].Addr().String(),
	}
	if diff := cmp.Diff(want, diskLeases(t, dir), cmpOpts); diff != "" {
		t.Errorf("files after Open (-want +got):\n%s", diff)
	}
	for _, p := range []string{filepath.Join(dir, "README"), filepath.Join(dir, "not-a-range")} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s was touched: %v", p, err)
		}
	}
	if u := b.Usage()[0]; u.Used != 2 {
		t.Errorf("IPv4 Used = %d, want 2 (keep + the reserved directory)", u.Used)
	}
	checkInvariants(t, b)
	// A second Open finds nothing left to clean.
	c := open(t, dir, v4r, v6r)
	if diff := cmp.Diff(b.List(), c.List(), cmpOpts); diff != "" {
		t.Errorf("List after second reopen (-want +got):\n%s", diff)
	}
}

// TestConcurrent: 100 goroutines allocating at once get 100 distinct
// addresses per family. Run with -race.
func TestConcurrent(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, v4r, v6r)
	const n = 100
	results := make([]Allocation, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			results[i], errs[i] = a.Allocate(Owner{ContainerID: fmt.Sprint("c", i), IfName: "eth0"})
		})
	}
	wg.Wait()
	t.Logf("%d concurrent dual-stack allocations took %v", n, time.Since(start))
	seen := map[netip.Addr]int{}
	for i, al := range results {
		if errs[i] != nil {
			t.Fatalf("Allocate c%d: %v", i, errs[i])
		}
		for _, p := range al.Addrs {
			if j, dup := seen[p.Addr()]; dup {
				t.Errorf("%s handed to c%d and c%d", p.Addr(), j, i)
			}
			seen[p.Addr()] = i
		}
	}
	if len(seen) != 2*n {
		t.Errorf("%d distinct addresses, want %d", len(seen), 2*n)
	}
	if got := len(diskLeases(t, dir)); got != 2*n {
		t.Errorf("%d lease files, want %d", got, 2*n)
	}
	checkInvariants(t, a)
	if diff := cmp.Diff(a.List(), open(t, dir, v4r, v6r).List(), cmpOpts); diff != "" {
		t.Errorf("List after reopen (-before +after):\n%s", diff)
	}
}
