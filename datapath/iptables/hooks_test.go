package iptables_test

import (
	"strings"
	"testing"

	"github.com/nodenet/nodenet/datapath/iptables"
)

// builtinRules returns the rules of one built-in chain in a dump, in order.
func builtinRules(dump, builtin string) []string {
	var out []string
	for _, l := range strings.Split(dump, "\n") {
		if strings.HasPrefix(l, "-A "+builtin+" ") {
			out = append(out, strings.TrimPrefix(l, "-A "+builtin+" "))
		}
	}
	return out
}

func hookTo(target string) string { return `-m comment --comment "nodenet hook" -j ` + target }

// TestSeveralHooksPerBuiltin: two owners hooking the same built-in chain get
// one hook each, in the order of the fixed list whatever order they sync
// in, around rules of others, and each hook leaves with its chain.
func TestSeveralHooksPerBuiltin(t *testing.T) {
	masqChains := []iptables.Chain{nat("NODENET-POSTROUTING", "-j RETURN")}
	proxyChains := []iptables.Chain{
		nat("NODENET-SERVICES", "-j RETURN"),
		nat("NODENET-PROXY-POST", "-j RETURN"),
		filter("NODENET-PROXY-FILTER", "-j RETURN"),
	}
	for _, proxyFirst := range []bool{false, true} {
		m, f := newFake(t)
		ctx := t.Context()
		mustRestore(t, f, iptables.IPv4, lines("*nat", ":OTHER - [0:0]", "-A POSTROUTING -j OTHER", "COMMIT"))
		order := []string{"masq", "proxy"}
		if proxyFirst {
			order = []string{"proxy", "masq"}
		}
		for _, owner := range order {
			chains := masqChains
			if owner == "proxy" {
				chains = proxyChains
			}
			if err := m.Sync(ctx, owner, chains, false); err != nil {
				t.Fatal(err)
			}
		}
		nat := f.DumpTable(iptables.IPv4, iptables.TableNAT)
		got := builtinRules(nat, "POSTROUTING")
		want := []string{hookTo("NODENET-PROXY-POST"), hookTo("NODENET-POSTROUTING"), "-j OTHER"}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("proxyFirst=%v: POSTROUTING = %q, want %q", proxyFirst, got, want)
		}
		for _, b := range []string{"PREROUTING", "OUTPUT"} {
			if got := builtinRules(nat, b); len(got) != 1 || got[0] != hookTo("NODENET-SERVICES") {
				t.Errorf("nat %s = %q, want one hook to NODENET-SERVICES", b, got)
			}
		}
		filt := f.DumpTable(iptables.IPv4, iptables.TableFilter)
		for _, b := range []string{"INPUT", "FORWARD", "OUTPUT"} {
			if got := builtinRules(filt, b); len(got) != 1 || got[0] != hookTo("NODENET-PROXY-FILTER") {
				t.Errorf("filter %s = %q, want one hook to NODENET-PROXY-FILTER", b, got)
			}
		}
		// Full syncs keep exactly one of each.
		for _, owner := range order {
			chains := masqChains
			if owner == "proxy" {
				chains = proxyChains
			}
			if err := m.Sync(ctx, owner, chains, true); err != nil {
				t.Fatal(err)
			}
		}
		if got2 := builtinRules(f.DumpTable(iptables.IPv4, iptables.TableNAT), "POSTROUTING"); strings.Join(got2, "\n") != strings.Join(want, "\n") {
			t.Errorf("after full syncs: POSTROUTING = %q, want %q", got2, want)
		}
		// The proxy leaves: its hooks go, masq's stays.
		if err := m.Sync(ctx, "proxy", nil, false); err != nil {
			t.Fatal(err)
		}
		nat = f.DumpTable(iptables.IPv4, iptables.TableNAT)
		if got := builtinRules(nat, "POSTROUTING"); len(got) != 2 || got[0] != hookTo("NODENET-POSTROUTING") {
			t.Errorf("after proxy left: POSTROUTING = %q", got)
		}
		if strings.Contains(nat, "NODENET-SERVICES") || strings.Contains(f.DumpTable(iptables.IPv4, iptables.TableFilter), "NODENET") {
			t.Errorf("proxy hooks left behind:\n%s", f.Dump(iptables.IPv4))
		}
	}
}

// TestHookInsertedBetween: a hook whose neighbours in the fixed list are
// both present goes between them, even with a foreign rule in between.
func TestHookInsertedBetween(t *testing.T) {
	m, f := newFake(t)
	ctx := t.Context()
	if err := m.Sync(ctx, "proxy", []iptables.Chain{filter("NODENET-PROXY-FILTER")}, false); err != nil {
		t.Fatal(err)
	}
	mustRestore(t, f, iptables.IPv4, lines("*filter", ":OTHER - [0:0]", "-I FORWARD 1 -j OTHER", "COMMIT"))
	if err := m.Sync(ctx, "policy", []iptables.Chain{filter("NODENET-FORWARD")}, false); err != nil {
		t.Fatal(err)
	}
	got := builtinRules(f.DumpTable(iptables.IPv4, iptables.TableFilter), "FORWARD")
	want := []string{"-j OTHER", hookTo("NODENET-PROXY-FILTER"), hookTo("NODENET-FORWARD")}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("FORWARD = %q, want %q", got, want)
	}
	if r := m.Rendered("policy")[iptables.TableFilter]; !strings.Contains(r, "-I FORWARD 3 "+hookTo("NODENET-FORWARD")) {
		t.Errorf("policy payload:\n%s", r)
	}
}
