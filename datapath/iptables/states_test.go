package iptables_test

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"regexp"
	"slices"
	"testing"

	"github.com/nodenet/nodenet/datapath/iptables"
	"github.com/nodenet/nodenet/datapath/iptables/iptablestest"
)

// state is what every owner wants at one moment.
type state map[string][]iptables.Chain

var ownerPrefixes = map[string][]string{
	iptables.MasqOwner: iptables.MasqPrefixes(),
	"proxy":            {"NODENET-SVC-", "NODENET-SEP-", "NODENET-PREROUTING"},
	"policy":           {"NODENET-POL-", "NODENET-FORWARD"},
}

// proxyChains is a toy Service proxy: services[i] endpoints for service i.
func proxyChains(fam iptables.Family, services ...int) []iptables.Chain {
	if len(services) == 0 {
		return nil
	}
	entry := nat("NODENET-PREROUTING")
	out := []iptables.Chain{}
	for i, eps := range services {
		vip, ep := fmt.Sprintf("10.96.0.%d/32", i+1), "10.244.%d.%d"
		if fam == iptables.IPv6 {
			vip, ep = fmt.Sprintf("fd00:96::%d/128", i+1), "fd00:10:244:%d::%d"
		}
		svc := nat(fmt.Sprintf("NODENET-SVC-%d", i))
		entry.Rules = append(entry.Rules, iptables.Rule("-d "+vip+" -p tcp -m tcp --dport 80 -j "+svc.Name))
		for e := range eps {
			sep := nat(fmt.Sprintf("NODENET-SEP-%d-%d", i, e), "-p tcp -m tcp -j DNAT --to-destination "+
				netip.AddrPortFrom(netip.MustParseAddr(fmt.Sprintf(ep, i, e+1)), 80).String()) // canonical, as the kernel prints it
			svc.Rules = append(svc.Rules, iptables.Rule("-j "+sep.Name))
			out = append(out, sep)
		}
		out = append(out, svc)
	}
	return append(out, entry)
}

// policyChains denies the given pod indexes.
func policyChains(fam iptables.Family, pods ...int) []iptables.Chain {
	if len(pods) == 0 {
		return nil
	}
	fwd := filter("NODENET-FORWARD")
	pol := filter("NODENET-POL-DENY")
	for _, p := range pods {
		ip := fmt.Sprintf("10.244.1.%d/32", p)
		if fam == iptables.IPv6 {
			ip = fmt.Sprintf("fd00:10:244:1::%d/128", p)
		}
		pol.Rules = append(pol.Rules, iptables.Rule("-d "+ip+" -j DROP"))
	}
	fwd.Rules = []iptables.Rule{"-m comment --comment \"network policy\" -j NODENET-POL-DENY"}
	return []iptables.Chain{fwd, pol}
}

func testStates(fam iptables.Family) []state {
	cidrs := func(s ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, c := range s {
			out = append(out, netip.MustParsePrefix(c))
		}
		return out
	}
	one := cidrs("10.244.0.0/16", "fd00:10:244::/56")
	two := cidrs("10.244.0.0/16", "10.245.0.0/16", "fd00:10:244::/56", "fd00:10:245::/56")
	return []state{
		{},
		{iptables.MasqOwner: iptables.MasqueradeChains(fam, one)},
		{iptables.MasqOwner: iptables.MasqueradeChains(fam, one), "proxy": proxyChains(fam, 2)},
		{iptables.MasqOwner: iptables.MasqueradeChains(fam, two), "proxy": proxyChains(fam, 2, 1), "policy": policyChains(fam, 3)},
		{iptables.MasqOwner: iptables.MasqueradeChains(fam, two), "proxy": proxyChains(fam, 1, 3, 0), "policy": policyChains(fam, 3, 4)},
		{"proxy": proxyChains(fam, 3), "policy": policyChains(fam, 4)},
		{iptables.MasqOwner: iptables.MasqueradeChains(fam, one), "policy": policyChains(fam, 5)},
	}
}

// emptyTable matches a dumped table holding only built-in chains and no
// rules: "never touched" and "emptied" must compare equal.
var emptyTable = regexp.MustCompile(`(?m)^\*\w+\n(:[A-Z]+ [A-Z]+ \[0:0\]\n)*COMMIT\n`)

func normalize(dump string) string { return emptyTable.ReplaceAllString(dump, "") }

type stateApplier struct {
	m      *iptables.Manager
	f      *iptablestest.Fake
	owners []string
}

func newStateApplier(t *testing.T, r iptables.Runner, fam iptables.Family) *stateApplier {
	t.Helper()
	a := &stateApplier{m: iptables.NewManager(r, fam, nil)}
	for _, o := range slices.Sorted(maps.Keys(ownerPrefixes)) {
		if err := a.m.Register(o, ownerPrefixes[o]...); err != nil {
			t.Fatal(err)
		}
		a.owners = append(a.owners, o)
	}
	return a
}

// apply syncs every owner to s, in rng's order, partial or full by rng.
func (a *stateApplier) apply(t *testing.T, s state, rng *rand.Rand) {
	t.Helper()
	owners := slices.Clone(a.owners)
	rng.Shuffle(len(owners), func(i, j int) { owners[i], owners[j] = owners[j], owners[i] })
	for _, o := range owners {
		if err := a.m.Sync(t.Context(), o, s[o], rng.IntN(4) == 0); err != nil {
			t.Fatalf("sync %s: %v", o, err)
		}
	}
}

// TestStates applies desired states in order, then shuffled many times;
// after each, the fake's dump must equal that of the state applied once to
// an empty ruleset. Some restores fail on the way: the retry must converge.
func TestStates(t *testing.T) {
	for _, fam := range []iptables.Family{iptables.IPv4, iptables.IPv6} {
		t.Run(fam.String(), func(t *testing.T) {
			states := testStates(fam)
			rng := rand.New(rand.NewPCG(1, uint64(fam)))
			want := make([]string, len(states))
			for i, s := range states {
				f := iptablestest.NewFake()
				newStateApplier(t, f, fam).apply(t, s, rng)
				want[i] = normalize(f.Dump(fam))
			}
			f := iptablestest.NewFake()
			a := newStateApplier(t, f, fam)
			order := make([]int, len(states))
			for i := range order {
				order[i] = i
			}
			injected := 0
			for round := range 60 {
				if round > 0 {
					rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
				}
				for _, i := range order {
					if rng.IntN(5) == 0 {
						injected++
						f.SetRestoreHook(func(iptablestest.Call) error { return errors.New("injected") })
						for _, o := range a.owners {
							_ = a.m.Sync(t.Context(), o, states[i][o], false) // fails when it has something to write
						}
						f.SetRestoreHook(nil)
					}
					a.apply(t, states[i], rng)
					if got := normalize(f.Dump(fam)); got != want[i] {
						t.Fatalf("round %d, state %d:\n%s\nwant:\n%s", round, i, got, want[i])
					}
				}
			}
			if injected == 0 {
				t.Error("no failure injected")
			}
		})
	}
}

// TestStatesGolden anchors the oracle of TestStates with one literal dump.
func TestStatesGolden(t *testing.T) {
	f := iptablestest.NewFake()
	newStateApplier(t, f, iptables.IPv4).apply(t, testStates(iptables.IPv4)[5], rand.New(rand.NewPCG(1, 2)))
	want := lines(
		"*nat",
		":PREROUTING ACCEPT [0:0]",
		":INPUT ACCEPT [0:0]",
		":OUTPUT ACCEPT [0:0]",
		":POSTROUTING ACCEPT [0:0]",
		":NODENET-PREROUTING - [0:0]",
		":NODENET-SEP-0-0 - [0:0]",
		":NODENET-SEP-0-1 - [0:0]",
		":NODENET-SEP-0-2 - [0:0]",
		":NODENET-SVC-0 - [0:0]",
		natHookLine,
		"-A NODENET-PREROUTING -d 10.96.0.1/32 -p tcp -m tcp --dport 80 -j NODENET-SVC-0",
		"-A NODENET-SEP-0-0 -p tcp -m tcp -j DNAT --to-destination 10.244.0.1:80",
		"-A NODENET-SEP-0-1 -p tcp -m tcp -j DNAT --to-destination 10.244.0.2:80",
		"-A NODENET-SEP-0-2 -p tcp -m tcp -j DNAT --to-destination 10.244.0.3:80",
		"-A NODENET-SVC-0 -j NODENET-SEP-0-0",
		"-A NODENET-SVC-0 -j NODENET-SEP-0-1",
		"-A NODENET-SVC-0 -j NODENET-SEP-0-2",
		"COMMIT",
		"*filter",
		":INPUT ACCEPT [0:0]",
		":FORWARD ACCEPT [0:0]",
		":OUTPUT ACCEPT [0:0]",
		":NODENET-FORWARD - [0:0]",
		":NODENET-POL-DENY - [0:0]",
		`-A FORWARD -m comment --comment "nodenet hook" -j NODENET-FORWARD`,
		`-A NODENET-FORWARD -m comment --comment "network policy" -j NODENET-POL-DENY`,
		"-A NODENET-POL-DENY -d 10.244.1.4/32 -j DROP",
		"COMMIT")
	if got := f.Dump(iptables.IPv4); got != want {
		t.Errorf("dump:\n%s\nwant:\n%s", got, want)
	}
}
