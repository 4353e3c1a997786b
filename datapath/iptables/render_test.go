package iptables_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/nodenet/nodenet/datapath/iptables"
)

type syncStep struct {
	owner  string
	chains []iptables.Chain
	full   bool
}

const hookPre = `-I PREROUTING 1 -m comment --comment "nodenet hook" -j NODENET-PREROUTING`

var (
	svcDNAT  = "-d 10.96.0.1/32 -p tcp -m tcp --dport 443 -j DNAT --to-destination 10.0.0.1:6443"
	pre      = nat("NODENET-PREROUTING", "-j NODENET-SVC-A")
	preBoth  = nat("NODENET-PREROUTING", "-j NODENET-SVC-A", "-j NODENET-SVC-B")
	svcA     = nat("NODENET-SVC-A", svcDNAT)
	svcA2    = nat("NODENET-SVC-A", "-d 10.96.0.1/32 -p tcp -m tcp --dport 443 -j DNAT --to-destination 10.0.0.2:6443")
	svcB     = nat("NODENET-SVC-B", "-d 10.96.0.2/32 -p udp -m udp --dport 53 -j DNAT --to-destination 10.0.0.3:53")
	forward  = filter("NODENET-FORWARD", "-j NODENET-POL-X")
	polX     = filter("NODENET-POL-X", "-s 10.244.1.5/32 -j DROP")
	stateSvc = []iptables.Chain{pre, svcA}
)

// TestRenderGolden pins the whole payload of one Sync after some history.
func TestRenderGolden(t *testing.T) {
	tests := []struct {
		name   string
		before []syncStep
		sync   syncStep
		want   map[iptables.Table]string
	}{{
		name: "first sync declares, fills and hooks",
		sync: syncStep{"proxy", stateSvc, false},
		want: map[iptables.Table]string{iptables.TableNAT: lines(
			"*nat",
			":NODENET-PREROUTING - [0:0]",
			":NODENET-SVC-A - [0:0]",
			"-A NODENET-PREROUTING -j NODENET-SVC-A",
			"-A NODENET-SVC-A "+svcDNAT,
			hookPre,
			"COMMIT")},
	}, {
		name:   "partial sync writes only the changed chain",
		before: []syncStep{{"proxy", stateSvc, false}},
		sync:   syncStep{"proxy", []iptables.Chain{pre, svcA2}, false},
		want: map[iptables.Table]string{iptables.TableNAT: lines(
			"*nat",
			":NODENET-SVC-A - [0:0]",
			"-A NODENET-SVC-A "+string(svcA2.Rules[0]),
			"COMMIT")},
	}, {
		name:   "partial sync without change writes nothing",
		before: []syncStep{{"proxy", stateSvc, false}},
		sync:   syncStep{"proxy", stateSvc, false},
		want:   map[iptables.Table]string{},
	}, {
		name:   "full sync with the kernel as programmed: nothing to write",
		before: []syncStep{{"proxy", stateSvc, false}},
		sync:   syncStep{"proxy", stateSvc, true},
		want:   map[iptables.Table]string{},
	}, {
		name:   "removed chain: the jump to it goes, then it is flushed and deleted",
		before: []syncStep{{"proxy", []iptables.Chain{preBoth, svcA, svcB}, false}},
		sync:   syncStep{"proxy", stateSvc, false},
		want: map[iptables.Table]string{iptables.TableNAT: lines(
			"*nat",
			":NODENET-PREROUTING - [0:0]",
			":NODENET-SVC-B - [0:0]",
			"-A NODENET-PREROUTING -j NODENET-SVC-A",
			"-X NODENET-SVC-B",
			"COMMIT")},
	}, {
		name:   "removed hook chain is unhooked before deletion",
		before: []syncStep{{"policy", []iptables.Chain{forward, polX}, false}},
		sync:   syncStep{"policy", nil, false},
		want: map[iptables.Table]string{iptables.TableFilter: lines(
			"*filter",
			":NODENET-FORWARD - [0:0]",
			":NODENET-POL-X - [0:0]",
			`-D FORWARD -m comment --comment "nodenet hook" -j NODENET-FORWARD`,
			"-X NODENET-FORWARD",
			"-X NODENET-POL-X",
			"COMMIT")},
	}, {
		name: "two tables, one payload each",
		sync: syncStep{"mixed", []iptables.Chain{pre, svcA, forward, polX}, false},
		want: map[iptables.Table]string{
			iptables.TableNAT: lines(
				"*nat",
				":NODENET-PREROUTING - [0:0]",
				":NODENET-SVC-A - [0:0]",
				"-A NODENET-PREROUTING -j NODENET-SVC-A",
				"-A NODENET-SVC-A "+svcDNAT,
				hookPre,
				"COMMIT"),
			iptables.TableFilter: lines(
				"*filter",
				":NODENET-FORWARD - [0:0]",
				":NODENET-POL-X - [0:0]",
				"-A NODENET-FORWARD -j NODENET-POL-X",
				"-A NODENET-POL-X -s 10.244.1.5/32 -j DROP",
				`-I FORWARD 1 -m comment --comment "nodenet hook" -j NODENET-FORWARD`,
				"COMMIT"),
		},
	}, {
		name:   "another owner's chains are not touched",
		before: []syncStep{{"policy", []iptables.Chain{forward, polX}, false}},
		sync:   syncStep{"proxy", stateSvc, true},
		want: map[iptables.Table]string{iptables.TableNAT: lines(
			"*nat",
			":NODENET-PREROUTING - [0:0]",
			":NODENET-SVC-A - [0:0]",
			"-A NODENET-PREROUTING -j NODENET-SVC-A",
			"-A NODENET-SVC-A "+svcDNAT,
			hookPre,
			"COMMIT")},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, f := newFake(t)
			for _, s := range tt.before {
				if err := m.Sync(t.Context(), s.owner, s.chains, s.full); err != nil {
					t.Fatalf("setup sync %s: %v", s.owner, err)
				}
			}
			f.ResetCalls()
			if err := m.Sync(t.Context(), tt.sync.owner, tt.sync.chains, tt.sync.full); err != nil {
				t.Fatalf("sync: %v", err)
			}
			if diff := cmp.Diff(tt.want, m.Rendered(tt.sync.owner), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("rendered payloads (-want +got):\n%s", diff)
			}
			if got, want := len(f.Restores()), len(tt.want); got != want {
				t.Errorf("restores = %d, want one per table: %d", got, want)
			}
		})
	}
}
