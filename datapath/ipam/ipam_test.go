package ipam

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFirstAddresses(t *testing.T) {
	for _, tc := range []struct {
		ranges  string
		want    []string // first allocations, one "v4 v6" string each
		openErr string
	}{
		{ranges: "10.244.1.0/24", want: []string{"10.244.1.2/24", "10.244.1.3/24", "10.244.1.4/24"}},
		{ranges: "10.0.0.4/30", want: []string{"10.0.0.6/30"}},
		{ranges: "10.0.0.4/31", openErr: "smaller than /30"},
		{ranges: "10.0.0.4/32", openErr: "smaller than /30"},
		{ranges: "fd00:1:2:3::/64", want: []string{"fd00:1:2:3::2/64", "fd00:1:2:3::3/64"}},
		{ranges: "fd00::100/120", want: []string{"fd00::102/120", "fd00::103/120"}},
		{ranges: "fd00::/127", openErr: "smaller than /126"},
		{ranges: "10.0.0.0/30 fd00::/126", want: []string{"10.0.0.2/30 fd00::2/126"}},
		{ranges: "fd00::/126 10.0.0.0/30", want: []string{"10.0.0.2/30 fd00::2/126"}},
		{ranges: "10.0.0.1/24", openErr: "not canonical"},
		{ranges: "10.0.0.0/24 10.1.0.0/24", openErr: "more than one IPv4 range"},
		{ranges: "fd00::/64 fd01::/64", openErr: "more than one IPv6 range"},
		{ranges: "::ffff:10.0.0.0/120", openErr: "IPv4-mapped"},
	} {
		t.Run(tc.ranges, func(t *testing.T) {
			var ranges []netip.Prefix
			for _, s := range strings.Fields(tc.ranges) {
				ranges = append(ranges, netip.MustParsePrefix(s))
			}
			a, err := Open(t.TempDir(), ranges, testOptions(t))
			if tc.openErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.openErr) {
					t.Fatalf("Open error = %v, want it to contain %q", err, tc.openErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for i := range tc.want {
				got = append(got, strings.Join(addrsOf(alloc(t, a, fmt.Sprint("c", i))), " "))
			}
			if diff := cmp.Diff(tc.want, got, cmpOpts); diff != "" {
				t.Errorf("addresses (-want +got):\n%s", diff)
			}
		})
	}
}

func TestInvalidPrefix(t *testing.T) {
	if _, err := Open(t.TempDir(), []netip.Prefix{{}}, testOptions(t)); err == nil {
		t.Fatal("Open accepted the zero prefix")
	}
}

// TestExhaust29 exhausts a /29 and checks the exact set handed out: never
// the network (.8), gateway (.9) or broadcast (.15) address.
func TestExhaust29(t *testing.T) {
	a := open(t, t.TempDir(), netip.MustParsePrefix("10.0.0.8/29"))
	var got []string
	for i := range 5 {
		got = append(got, addrsOf(alloc(t, a, fmt.Sprint("c", i)))...)
	}
	want := []string{"10.0.0.10/29", "10.0.0.11/29", "10.0.0.12/29", "10.0.0.13/29", "10.0.0.14/29"}
	if diff := cmp.Diff(want, got, cmpOpts); diff != "" {
		t.Errorf("addresses (-want +got):\n%s", diff)
	}
	_, err := a.Allocate(Owner{ContainerID: "c5", IfName: "eth0"})
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("6th Allocate: err = %v, want ErrExhausted", err)
	}
	if want := "ipam: no free address in 10.0.0.8/29 on node n1 (5 in use)"; err.Error() != want {
		t.Errorf("error text %q, want %q", err.Error(), want)
	}
	wantUsage := []RangeUsage{{Range: netip.MustParsePrefix("10.0.0.8/29"), Used: 5, Free: 0}}
	if diff := cmp.Diff(wantUsage, a.Usage(), cmpOpts); diff != "" {
		t.Errorf("Usage (-want +got):\n%s", diff)
	}
	// Freeing one makes exactly that one available again.
	if ok, err := a.Release("c2", "eth0"); !ok || err != nil {
		t.Fatalf("Release = %v, %v", ok, err)
	}
	if got := addrsOf(alloc(t, a, "c6")); !cmp.Equal(got, []string{"10.0.0.12/29"}, cmpOpts) {
		t.Errorf("after release got %v, want 10.0.0.12/29", got)
	}
}

func TestIdempotent(t *testing.T) {
	a := open(t, t.TempDir(), v4r, v6r)
	first := alloc(t, a, "c1")
	again, err := a.Allocate(Owner{ContainerID: "c1", IfName: "eth0", Pod: "other"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(first, again, cmpOpts); diff != "" {
		t.Errorf("second Allocate differs (-first +second):\n%s", diff)
	}
	// Another interface of the same container is another owner.
	if other := alloc(t, a, "c1x"); cmp.Equal(other.Addrs, first.Addrs, cmpOpts) {
		t.Errorf("different owner got the same addresses %v", other.Addrs)
	}
	got, ok := a.Get("c1", "eth0")
	if !ok || !cmp.Equal(got, first, cmpOpts) {
		t.Errorf("Get = %v, %v; want %v", got, ok, first)
	}
	if _, ok := a.Get("c1", "eth1"); ok {
		t.Error("Get of unknown interface found something")
	}
	if want := []string{"10.244.1.2/24", "fd00:10:244:1::2/64"}; !cmp.Equal(addrsOf(first), want, cmpOpts) {
		t.Errorf("dual-stack addresses %v, want %v", addrsOf(first), want)
	}
}

func TestNoImmediateReuse(t *testing.T) {
	a := open(t, t.TempDir(), netip.MustParsePrefix("10.0.0.8/29"))
	var got []string
	got = append(got, addrsOf(alloc(t, a, "a"), alloc(t, a, "b"))...)
	for _, cid := range []string{"a", "b"} {
		if _, err := a.Release(cid, "eth0"); err != nil {
			t.Fatal(err)
		}
	}
	for _, cid := range []string{"c", "d", "e", "f", "g"} {
		got = append(got, addrsOf(alloc(t, a, cid))...)
	}
	// .10 and .11 come back only after .12-.14 have been used: the cursor
	// wraps around the range.
	want := []string{"10.0.0.10/29", "10.0.0.11/29", "10.0.0.12/29", "10.0.0.13/29", "10.0.0.14/29", "10.0.0.10/29", "10.0.0.11/29"}
	if diff := cmp.Diff(want, got, cmpOpts); diff != "" {
		t.Errorf("addresses (-want +got):\n%s", diff)
	}
}

func TestValidateOwner(t *testing.T) {
	a := open(t, t.TempDir(), v4r)
	for _, o := range []Owner{{IfName: "eth0"}, {ContainerID: "c"}, {}} {
		if _, err := a.Allocate(o); err == nil {
			t.Errorf("Allocate(%+v) succeeded", o)
		}
		if _, err := a.Release(o.ContainerID, o.IfName); err == nil {
			t.Errorf("Release(%+v) succeeded", o)
		}
	}
	if ok, err := a.Release("unknown", "eth0"); ok || err != nil {
		t.Errorf("Release(unknown) = %v, %v; want false, nil", ok, err)
	}
	if len(a.List()) != 0 {
		t.Errorf("List = %v", a.List())
	}
}

func TestNoRanges(t *testing.T) {
	a := open(t, t.TempDir())
	if _, err := a.Allocate(Owner{ContainerID: "c", IfName: "eth0"}); err == nil || !strings.Contains(err.Error(), "no pod ranges") {
		t.Errorf("Allocate without ranges: %v", err)
	}
}

func TestGateways(t *testing.T) {
	a := open(t, t.TempDir(), v6r, v4r)
	want := []netip.Prefix{netip.MustParsePrefix("10.244.1.1/24"), netip.MustParsePrefix("fd00:10:244:1::1/64")}
	if diff := cmp.Diff(want, a.Gateways(), cmpOpts); diff != "" {
		t.Errorf("Gateways (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]netip.Prefix{v4r, v6r}, a.Ranges(), cmpOpts); diff != "" {
		t.Errorf("Ranges (-want +got):\n%s", diff)
	}
}

func TestUsageHugeRanges(t *testing.T) {
	a := open(t, t.TempDir(), netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/48"))
	alloc(t, a, "c")
	want := []RangeUsage{
		{Range: netip.MustParsePrefix("10.0.0.0/8"), Used: 1, Free: 1<<24 - 3 - 1},
		{Range: netip.MustParsePrefix("fd00::/48"), Used: 1, Free: math.MaxUint64 - 1},
	}
	if diff := cmp.Diff(want, a.Usage(), cmpOpts); diff != "" {
		t.Errorf("Usage (-want +got):\n%s", diff)
	}
	b := open(t, t.TempDir(), v6r)
	alloc(t, b, "c")
	if got, want := b.Usage()[0].Free, uint64(math.MaxUint64-2); got != want {
		t.Errorf("/64 Free = %d, want 2^64-2-1 = %d", got, want)
	}
}

// TestRollback makes the second family fail and checks that the first one
// is rolled back, in memory and on disk.
func TestRollback(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, v4r, v6r)
	alloc(t, a, "before")
	injected := errors.New("injected failure")
	a.claimHook = func(addr netip.Addr) error {
		if addr.Is6() {
			return injected
		}
		return nil
	}
	_, err := a.Allocate(Owner{ContainerID: "c", IfName: "eth0"})
	if !errors.Is(err, injected) {
		t.Fatalf("Allocate error = %v, want the injected one", err)
	}
	if _, ok := a.Get("c", "eth0"); ok {
		t.Error("failed allocation is listed")
	}
	want := []string{"10.244.1.0_24/10.244.1.2", "fd00:10:244:1::_64/fd00:10:244:1::2"}
	if diff := cmp.Diff(want, diskLeases(t, dir), cmpOpts); diff != "" {
		t.Errorf("lease files (-want +got):\n%s", diff)
	}
	checkInvariants(t, a)

	// Exhausting the second family also leaves the first untouched.
	a.claimHook = nil
	b := open(t, t.TempDir(), v4r, netip.MustParsePrefix("fd00::/126"))
	alloc(t, b, "x")
	alloc(t, b, "y")
	if _, err := b.Allocate(Owner{ContainerID: "z", IfName: "eth0"}); !errors.Is(err, ErrExhausted) {
		t.Fatalf("third dual-stack Allocate: %v, want ErrExhausted", err)
	}
	if got := b.Usage()[0].Used; got != 2 {
		t.Errorf("IPv4 used = %d after failed allocation, want 2", got)
	}
}

// TestTakenOnDisk: a lease file we do not know about (only possible if
// something else writes the dir) is skipped, not overwritten.
func TestTakenOnDisk(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, v4r)
	if err := os.WriteFile(filepath.Join(dir, dirName(v4r), "10.244.1.2"), []byte("foreign"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := addrsOf(alloc(t, a, "c")); !cmp.Equal(got, []string{"10.244.1.3/24"}, cmpOpts) {
		t.Errorf("got %v, want 10.244.1.3/24", got)
	}
	if u := a.Usage()[0]; u.Used != 2 {
		t.Errorf("Used = %d, want 2 (lease + foreign file)", u.Used)
	}
	checkInvariants(t, a)
}

func TestSetRanges(t *testing.T) {
	dir := t.TempDir()
	oldV4 := netip.MustParsePrefix("10.244.0.0/24")
	newV4 := netip.MustParsePrefix("10.244.0.0/23")
	a := open(t, dir, oldV4, v6r)
	x := alloc(t, a, "x")

	if err := a.SetRanges([]netip.Prefix{netip.MustParsePrefix("10.9.0.0/24"), netip.MustParsePrefix("10.8.0.0/24")}); err == nil {
		t.Fatal("SetRanges accepted two IPv4 ranges")
	}
	if diff := cmp.Diff([]netip.Prefix{oldV4, v6r}, a.Ranges(), cmpOpts); diff != "" {
		t.Errorf("Ranges changed by a failed SetRanges (-want +got):\n%s", diff)
	}

	// Single-stack now, on a larger range that overlaps the old one.
	if err := a.SetRanges([]netip.Prefix{newV4}); err != nil {
		t.Fatal(err)
	}
	y := alloc(t, a, "y")
	if want := []string{"10.244.0.3/23"}; !cmp.Equal(addrsOf(y), want, cmpOpts) {
		t.Errorf("y got %v, want %v (10.244.0.2 is still x's)", addrsOf(y), want)
	}
	if got, ok := a.Get("x", "eth0"); !ok || !cmp.Equal(got, x, cmpOpts) {
		t.Errorf("x after SetRanges: %v, %v", got, ok)
	}
	again, err := a.Allocate(Owner{ContainerID: "x", IfName: "eth0"})
	if err != nil || !cmp.Equal(again, x, cmpOpts) {
		t.Errorf("idempotent Allocate of a stale allocation = %v, %v", again, err)
	}
	wantUsage := []RangeUsage{
		{Range: newV4, Used: 2, Free: 509 - 2},
		{Range: oldV4, Used: 1, Stale: true},
		{Range: v6r, Used: 1, Stale: true},
	}
	if diff := cmp.Diff(wantUsage, a.Usage(), cmpOpts); diff != "" {
		t.Errorf("Usage (-want +got):\n%s", diff)
	}
	checkInvariants(t, a)

	// The same after a restart.
	b := open(t, dir, newV4)
	if diff := cmp.Diff(a.List(), b.List(), cmpOpts); diff != "" {
		t.Errorf("List after reopen (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(wantUsage, b.Usage(), cmpOpts); diff != "" {
		t.Errorf("Usage after reopen (-want +got):\n%s", diff)
	}
	// Releasing the last stale lease drops the stale ranges from Usage.
	if ok, err := b.Release("x", "eth0"); !ok || err != nil {
		t.Fatalf("Release(x) = %v, %v", ok, err)
	}
	wantUsage = []RangeUsage{{Range: newV4, Used: 1, Free: 509 - 1}}
	if diff := cmp.Diff(wantUsage, b.Usage(), cmpOpts); diff != "" {
		t.Errorf("Usage after release (-want +got):\n%s", diff)
	}
	checkInvariants(t, b)
}

func TestGC(t *testing.T) {
	a := open(t, t.TempDir(), v4r, v6r)
	var all []Allocation
	for i := range 6 {
		all = append(all, alloc(t, a, fmt.Sprint("c", i)))
	}
	released, err := a.GC(func(al Allocation) bool {
		// keep runs without the lock: calling back must not deadlock.
		if _, ok := a.Get(al.ContainerID, al.IfName); !ok {
			t.Errorf("Get(%s) inside keep failed", al.ContainerID)
		}
		return al.ContainerID != "c1" && al.ContainerID != "c4"
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Allocation{all[1], all[4]}, released, cmpOpts); diff != "" {
		t.Errorf("released (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]Allocation{all[0], all[2], all[3], all[5]}, a.List(), cmpOpts); diff != "" {
		t.Errorf("List after GC (-want +got):\n%s", diff)
	}
	if _, err := a.GC(nil); err == nil {
		t.Error("GC(nil) succeeded")
	}
	checkInvariants(t, a)
}
