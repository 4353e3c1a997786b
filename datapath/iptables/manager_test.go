package iptables_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/nodenet/nodenet/datapath/iptables"
	"github.com/nodenet/nodenet/datapath/iptables/iptablestest"
)

const natHookLine = `-A PREROUTING -m comment --comment "nodenet hook" -j NODENET-PREROUTING`

func TestSyncValidation(t *testing.T) {
	long := "NODENET-" + strings.Repeat("X", 21) // 29 characters
	tests := []struct {
		name   string
		chains []iptables.Chain
		want   string
	}{
		{"name without prefix", []iptables.Chain{nat("KUBE-SERVICES")}, `must start with "NODENET-"`},
		{"bare prefix", []iptables.Chain{nat("NODENET-")}, `must start with "NODENET-"`},
		{"name too long", []iptables.Chain{nat(long)}, "longer than 28"},
		{"unknown table", []iptables.Chain{chain("security", "NODENET-X")}, "unknown table"},
		{"duplicate", []iptables.Chain{nat("NODENET-X"), nat("NODENET-X")}, "given twice"},
		{"command in rule", []iptables.Chain{nat("NODENET-X", "-A NODENET-X -j ACCEPT")}, `command "-A"`},
		{"newline in rule", []iptables.Chain{nat("NODENET-X", "-j ACCEPT\n-A POSTROUTING -j DROP")}, "newline"},
		{"empty rule", []iptables.Chain{nat("NODENET-X", " ")}, "empty rule"},
		{"bad quoting", []iptables.Chain{nat("NODENET-X", `-m comment --comment "x -j ACCEPT`)}, "unterminated quote"},
		{"jump to chain not synced", []iptables.Chain{nat("NODENET-X", "-j NODENET-Y")}, "jumps to NODENET-Y"},
		{"jump to chain in another table", []iptables.Chain{nat("NODENET-X", "-j NODENET-Y"), filter("NODENET-Y")}, "jumps to NODENET-Y"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, f := newFake(t)
			err := m.Sync(t.Context(), "proxy", tt.chains, false)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Sync error = %v, want one containing %q", err, tt.want)
			}
			if n := len(f.Restores()); n != 0 {
				t.Errorf("invalid input led to %d restores", n)
			}
		})
	}
	if len(long) != 29 {
		t.Fatalf("test bug: len(long) = %d", len(long))
	}
	m, _ := newFake(t)
	if err := m.Sync(t.Context(), "proxy", []iptables.Chain{nat(long[:28])}, false); err != nil {
		t.Errorf("a 28-character name is valid: %v", err)
	}
}

func TestOwnership(t *testing.T) {
	m, _ := newFake(t)
	ctx := t.Context()
	if err := m.Sync(ctx, "masq", []iptables.Chain{nat("NODENET-POSTROUTING")}, false); err != nil {
		t.Fatal(err)
	}
	err := m.Sync(ctx, "proxy", []iptables.Chain{nat("NODENET-POSTROUTING")}, false)
	if err == nil || !strings.Contains(err.Error(), `owned by "masq"`) {
		t.Fatalf("second owner: err = %v, want ownership conflict", err)
	}
	// The same name in another table is another chain.
	if err := m.Sync(ctx, "policy", []iptables.Chain{filter("NODENET-POSTROUTING")}, false); err != nil {
		t.Errorf("same name in filter: %v", err)
	}
	// Once masq lets go, proxy may take it.
	if err := m.Sync(ctx, "masq", nil, false); err != nil {
		t.Fatal(err)
	}
	if err := m.Sync(ctx, "proxy", []iptables.Chain{nat("NODENET-POSTROUTING")}, false); err != nil {
		t.Errorf("after release: %v", err)
	}
	if err := m.Sync(ctx, "", nil, false); err == nil {
		t.Error("empty owner accepted")
	}
}

func TestOwnershipAfterFailure(t *testing.T) {
	m, f := newFake(t)
	ctx := t.Context()
	if err := m.Sync(ctx, "masq", []iptables.Chain{nat("NODENET-A")}, false); err != nil {
		t.Fatal(err)
	}
	f.SetRestoreHook(func(iptablestest.Call) error { return errors.New("boom") })
	if err := m.Sync(ctx, "masq", []iptables.Chain{nat("NODENET-B")}, false); err == nil {
		t.Fatal("want error")
	}
	f.SetRestoreHook(nil)
	// After a failure masq may still hold both A and B in the kernel.
	for _, name := range []string{"NODENET-A", "NODENET-B"} {
		if err := m.Sync(ctx, "proxy", []iptables.Chain{nat(name)}, false); err == nil {
			t.Errorf("proxy took %s while masq may still hold it", name)
		}
	}
}

func TestRegister(t *testing.T) {
	m, f := newFake(t)
	ctx := t.Context()
	if err := m.Register("proxy", "NODENET-SVC-", "NODENET-SEP-"); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ owner, prefix, want string }{
		{"policy", "NODENET-SVC-X", "overlaps"},
		{"policy", "NODENET-S", "overlaps"},
		{"policy", "KUBE-", "must extend"},
		{"policy", "NODENET-", "must extend"},
		{"", "NODENET-POL-", "empty owner"},
	} {
		if err := m.Register(tt.owner, tt.prefix); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Register(%q, %q) = %v, want %q", tt.owner, tt.prefix, err, tt.want)
		}
	}
	// A chain matching another owner's prefix is that owner's.
	err := m.Sync(ctx, "policy", []iptables.Chain{filter("NODENET-SVC-Q")}, false)
	if err == nil || !strings.Contains(err.Error(), `owned by "proxy"`) {
		t.Errorf("sync into another owner's prefix: %v", err)
	}
	// A prefix may not cover a chain another owner already holds.
	if err := m.Sync(ctx, "masq", []iptables.Chain{nat("NODENET-MASQ")}, false); err != nil {
		t.Fatal(err)
	}
	if err := m.Register("policy", "NODENET-MA"); err == nil || !strings.Contains(err.Error(), "matches chain nat/NODENET-MASQ") {
		t.Errorf("prefix over a held chain: %v", err)
	}
	if n := len(f.Restores()); n != 1 {
		t.Errorf("restores = %d, want 1", n)
	}
}

// TestStaleChains: after a restart, an owner's full sync removes the
// chains matching its prefixes that it no longer wants, with their hooks,
// and nothing else.
func TestStaleChains(t *testing.T) {
	f := iptablestest.NewFake()
	ctx := t.Context()
	old := iptables.NewManager(f, iptables.IPv4, nil)
	if err := old.Sync(ctx, "proxy", []iptables.Chain{preBoth, svcA, svcB}, false); err != nil {
		t.Fatal(err)
	}
	if err := old.Sync(ctx, "policy", []iptables.Chain{forward, polX}, false); err != nil {
		t.Fatal(err)
	}
	mustRestore(t, f, iptables.IPv4, lines("*nat", ":KUBE-SERVICES - [0:0]", "-A PREROUTING -j KUBE-SERVICES", "COMMIT"))

	// The new process: proxy now only wants svcA, and no hook chain.
	m := iptables.NewManager(f, iptables.IPv4, nil)
	if err := m.Register("proxy", "NODENET-SVC-", "NODENET-PREROUTING"); err != nil {
		t.Fatal(err)
	}
	if err := m.Register("policy", "NODENET-POL-", "NODENET-FORWARD"); err != nil {
		t.Fatal(err)
	}
	if err := m.Sync(ctx, "proxy", []iptables.Chain{svcA}, false); err != nil {
		t.Fatal(err)
	}
	want := lines(
		"*nat",
		":PREROUTING ACCEPT [0:0]",
		":INPUT ACCEPT [0:0]",
		":OUTPUT ACCEPT [0:0]",
		":POSTROUTING ACCEPT [0:0]",
		":KUBE-SERVICES - [0:0]",
		":NODENET-SVC-A - [0:0]",
		"-A PREROUTING -j KUBE-SERVICES",
		"-A NODENET-SVC-A "+svcDNAT,
		"COMMIT")
	if got := f.DumpTable(iptables.IPv4, iptables.TableNAT); got != want {
		t.Errorf("nat after proxy's first sync:\n%s\nwant:\n%s", got, want)
	}
	// policy's chains are untouched until policy syncs.
	if got := f.DumpTable(iptables.IPv4, iptables.TableFilter); !strings.Contains(got, ":NODENET-POL-X") {
		t.Errorf("policy chains touched by proxy's sync:\n%s", got)
	}
	if err := m.Sync(ctx, "policy", nil, true); err != nil {
		t.Fatal(err)
	}
	if got := f.DumpTable(iptables.IPv4, iptables.TableFilter); strings.Contains(got, "NODENET") {
		t.Errorf("filter after policy's empty sync still has our chains:\n%s", got)
	}
}

func TestHooksNeverDuplicated(t *testing.T) {
	m, f := newFake(t)
	ctx := t.Context()
	hookCount := func() int { return countLines(f.DumpTable(iptables.IPv4, iptables.TableNAT), natHookLine) }
	for i, full := range []bool{false, true, true, false, true} {
		if err := m.Sync(ctx, "proxy", stateSvc, full); err != nil {
			t.Fatal(err)
		}
		if n := hookCount(); n != 1 {
			t.Fatalf("sync %d: %d hooks", i, n)
		}
	}
	// Present from an earlier process: a new Manager does not add another.
	m2 := iptables.NewManager(f, iptables.IPv4, nil)
	if err := m2.Sync(ctx, "proxy", stateSvc, false); err != nil {
		t.Fatal(err)
	}
	if n := hookCount(); n != 1 {
		t.Fatalf("after restart: %d hooks", n)
	}
	// Duplicated behind our back: the full sync leaves one.
	mustRestore(t, f, iptables.IPv4, lines("*nat", hookPre, hookPre, "COMMIT"))
	if err := m2.Sync(ctx, "proxy", stateSvc, true); err != nil {
		t.Fatal(err)
	}
	if n := hookCount(); n != 1 {
		t.Fatalf("after duplication and full sync: %d hooks", n)
	}
	// Deleted behind our back: a partial sync trusts the cache, a full one repairs.
	mustRestore(t, f, iptables.IPv4, lines("*nat", "-D "+natHookLine[3:], "COMMIT"))
	if err := m2.Sync(ctx, "proxy", stateSvc, false); err != nil {
		t.Fatal(err)
	}
	if n := hookCount(); n != 0 {
		t.Fatalf("partial sync touched hooks: %d", n)
	}
	if err := m2.Sync(ctx, "proxy", stateSvc, true); err != nil {
		t.Fatal(err)
	}
	if n := hookCount(); n != 1 {
		t.Fatalf("after full sync: %d hooks", n)
	}
	// A hook is at position 1, ahead of rules others inserted before.
	mustRestore(t, f, iptables.IPv4, lines("*nat", ":KUBE-SERVICES - [0:0]", "-A PREROUTING -j KUBE-SERVICES", "COMMIT"))
	if err := m2.Sync(ctx, "proxy", nil, false); err != nil {
		t.Fatal(err)
	}
	if err := m2.Sync(ctx, "proxy", stateSvc, false); err != nil {
		t.Fatal(err)
	}
	dump := f.DumpTable(iptables.IPv4, iptables.TableNAT)
	if i, j := strings.Index(dump, natHookLine), strings.Index(dump, "-A PREROUTING -j KUBE-SERVICES"); i < 0 || j < 0 || i > j {
		t.Errorf("hook not first in PREROUTING:\n%s", dump)
	}
}

func TestPartialAndFull(t *testing.T) {
	m, f := newFake(t)
	ctx := t.Context()
	if err := m.Sync(ctx, "proxy", stateSvc, false); err != nil {
		t.Fatal(err)
	}
	want := f.DumpTable(iptables.IPv4, iptables.TableNAT)
	if saves := f.Saves(); saves != 1 {
		t.Errorf("first sync: %d saves, want 1 (it is full)", saves)
	}
	f.ResetCalls()
	if err := m.Sync(ctx, "proxy", stateSvc, false); err != nil {
		t.Fatal(err)
	}
	if r, s := len(f.Restores()), f.Saves(); r != 0 || s != 0 {
		t.Errorf("unchanged partial sync: %d restores, %d saves, want none", r, s)
	}
	// Flushed behind our back: only a full sync notices.
	mustRestore(t, f, iptables.IPv4, lines("*nat", "-F NODENET-SVC-A", "COMMIT"))
	f.ResetCalls()
	if err := m.Sync(ctx, "proxy", stateSvc, false); err != nil {
		t.Fatal(err)
	}
	if len(f.Restores()) != 0 {
		t.Error("partial sync wrote unchanged chains")
	}
	if err := m.Sync(ctx, "proxy", stateSvc, true); err != nil {
		t.Fatal(err)
	}
	if got := f.DumpTable(iptables.IPv4, iptables.TableNAT); got != want {
		t.Errorf("after full sync:\n%s\nwant:\n%s", got, want)
	}
}

func TestRestoreFailureForcesFullSync(t *testing.T) {
	m, f := newFake(t)
	ctx := t.Context()
	if err := m.Sync(ctx, "proxy", stateSvc, false); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	f.SetRestoreHook(func(iptablestest.Call) error { return boom })
	err := m.Sync(ctx, "proxy", []iptables.Chain{pre, svcA2}, false)
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "restore nat table") {
		t.Fatalf("err = %v, want boom wrapped with the table", err)
	}
	f.SetRestoreHook(nil)
	f.ResetCalls()
	// The next sync, though asked to be partial, reads the kernel and
	// rewrites what differs from it (the failed restore left svcA).
	if err := m.Sync(ctx, "proxy", []iptables.Chain{pre, svcA2}, false); err != nil {
		t.Fatal(err)
	}
	if f.Saves() != 1 {
		t.Errorf("saves = %d, want 1", f.Saves())
	}
	got := m.Rendered("proxy")[iptables.TableNAT]
	if !strings.Contains(got, ":NODENET-SVC-A - [0:0]") || strings.Contains(got, ":NODENET-PREROUTING - [0:0]") {
		t.Errorf("sync after failure: want NODENET-SVC-A rewritten and NODENET-PREROUTING (unchanged in the kernel) not:\n%s", got)
	}
	// A kernel rejecting the payload is reported the same way.
	err = m.Sync(ctx, "proxy", []iptables.Chain{nat("NODENET-SVC-A", "-j NO-SUCH-TARGET")}, false)
	if err == nil || !strings.Contains(err.Error(), "restore nat table") {
		t.Fatalf("bad target: %v", err)
	}
	f.ResetCalls()
	if err := m.Sync(ctx, "proxy", stateSvc, false); err != nil {
		t.Fatal(err)
	}
	if f.Saves() != 1 {
		t.Errorf("sync after kernel rejection: %d saves, want a full sync", f.Saves())
	}
}

func TestSaveFailure(t *testing.T) {
	m := iptables.NewManager(failingSaver{iptablestest.NewFake()}, iptables.IPv4, nil)
	err := m.Sync(t.Context(), "proxy", stateSvc, false)
	if err == nil || !strings.Contains(err.Error(), "save all tables") {
		t.Fatalf("err = %v", err)
	}
}

type failingSaver struct{ *iptablestest.Fake }

func (failingSaver) Save(_ context.Context, _ iptables.Family, _ iptables.Table) ([]byte, error) {
	return nil, errors.New("no iptables-save")
}

// TestConcurrentOwners: owners sync from their own goroutines.
func TestConcurrentOwners(t *testing.T) {
	m, f := newFake(t)
	owners := map[string][]iptables.Chain{
		iptables.MasqOwner: iptables.MasqueradeChains(iptables.IPv4, clusterCIDRs),
		"proxy":            stateSvc,
		"policy":           {forward, polX},
	}
	var wg sync.WaitGroup
	for owner, chains := range owners {
		wg.Go(func() {
			for i := range 20 {
				if err := m.Sync(t.Context(), owner, chains, i%5 == 0); err != nil {
					t.Errorf("sync %s: %v", owner, err)
				}
			}
		})
	}
	wg.Wait()
	dump := f.Dump(iptables.IPv4)
	for _, hook := range []string{"NODENET-POSTROUTING", "NODENET-PREROUTING", "NODENET-FORWARD"} {
		if n := strings.Count(dump, `--comment "nodenet hook" -j `+hook+"\n"); n != 1 {
			t.Errorf("%d hooks to %s:\n%s", n, hook, dump)
		}
	}
	if err := iptables.NewManager(f, 0, nil).Sync(t.Context(), "proxy", nil, false); err == nil {
		t.Error("invalid family accepted")
	}
}
