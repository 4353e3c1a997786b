package iptables_test

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/nodenet/nodenet/datapath/iptables"
	"github.com/nodenet/nodenet/datapath/iptables/iptablestest"
)

var clusterCIDRs = []netip.Prefix{
	netip.MustParsePrefix("10.244.0.0/16"),
	netip.MustParsePrefix("10.245.0.0/16"),
	netip.MustParsePrefix("fd00:10:244::/56"),
	netip.MustParsePrefix("10.244.0.0/16"), // duplicates are dropped
}

func TestMasqueradeGolden(t *testing.T) {
	tests := []struct {
		fam   iptables.Family
		cidrs []netip.Prefix
		want  map[iptables.Table]string
	}{{
		fam:   iptables.IPv4,
		cidrs: clusterCIDRs,
		want: map[iptables.Table]string{iptables.TableNAT: lines(
			"*nat",
			":NODENET-MASQ - [0:0]",
			":NODENET-POSTROUTING - [0:0]",
			`-A NODENET-MASQ -d 224.0.0.0/4 -m comment --comment "nodenet: multicast is not NATed" -j RETURN`,
			`-A NODENET-MASQ -d 10.244.0.0/16 -m comment --comment "nodenet: pod to pod is not NATed" -j RETURN`,
			`-A NODENET-MASQ -d 10.245.0.0/16 -m comment --comment "nodenet: pod to pod is not NATed" -j RETURN`,
			`-A NODENET-MASQ -m comment --comment "nodenet: pod to outside" -j MASQUERADE --random-fully`,
			`-A NODENET-POSTROUTING -s 10.244.0.0/16 -m comment --comment "nodenet: from pods" -j NODENET-MASQ`,
			`-A NODENET-POSTROUTING -s 10.245.0.0/16 -m comment --comment "nodenet: from pods" -j NODENET-MASQ`,
			`-I POSTROUTING 1 -m comment --comment "nodenet hook" -j NODENET-POSTROUTING`,
			"COMMIT")},
	}, {
		fam:   iptables.IPv6,
		cidrs: clusterCIDRs,
		want: map[iptables.Table]string{iptables.TableNAT: lines(
			"*nat",
			":NODENET-MASQ - [0:0]",
			":NODENET-POSTROUTING - [0:0]",
			`-A NODENET-MASQ -d ff00::/8 -m comment --comment "nodenet: multicast is not NATed" -j RETURN`,
			`-A NODENET-MASQ -d fd00:10:244::/56 -m comment --comment "nodenet: pod to pod is not NATed" -j RETURN`,
			`-A NODENET-MASQ -m comment --comment "nodenet: pod to outside" -j MASQUERADE --random-fully`,
			`-A NODENET-POSTROUTING -s fd00:10:244::/56 -m comment --comment "nodenet: from pods" -j NODENET-MASQ`,
			`-I POSTROUTING 1 -m comment --comment "nodenet hook" -j NODENET-POSTROUTING`,
			"COMMIT")},
	}, {
		fam:   iptables.IPv6,
		cidrs: clusterCIDRs[:2], // no IPv6 CIDR: no chains
		want:  nil,
	}}
	for _, tt := range tests {
		t.Run(tt.fam.String(), func(t *testing.T) {
			f := iptablestest.NewFake()
			m := iptables.NewManager(f, tt.fam, nil)
			if err := m.Register(iptables.MasqOwner, iptables.MasqPrefixes()...); err != nil {
				t.Fatal(err)
			}
			if err := m.Sync(t.Context(), iptables.MasqOwner, iptables.MasqueradeChains(tt.fam, tt.cidrs), false); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, m.Rendered(iptables.MasqOwner), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("payload (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMasqueradeTrace(t *testing.T) {
	addr := netip.MustParseAddr
	tests := []struct {
		name     string
		fam      iptables.Family
		src, dst string
		verdict  string
		hops     []string
	}{
		{"pod to pod, same CIDR", iptables.IPv4, "10.244.1.5", "10.244.2.7", "ACCEPT",
			[]string{"POSTROUTING#1", "NODENET-POSTROUTING#1", "NODENET-MASQ#2", "POSTROUTING#0"}},
		{"pod to pod, across CIDRs", iptables.IPv4, "10.245.1.5", "10.244.2.7", "ACCEPT",
			[]string{"POSTROUTING#1", "NODENET-POSTROUTING#2", "NODENET-MASQ#2", "POSTROUTING#0"}},
		{"pod to outside", iptables.IPv4, "10.244.1.5", "8.8.8.8", "MASQUERADE",
			[]string{"POSTROUTING#1", "NODENET-POSTROUTING#1", "NODENET-MASQ#4"}},
		{"pod to multicast", iptables.IPv4, "10.244.1.5", "239.1.2.3", "ACCEPT",
			[]string{"POSTROUTING#1", "NODENET-POSTROUTING#1", "NODENET-MASQ#1", "POSTROUTING#0"}},
		{"node to outside", iptables.IPv4, "192.168.1.10", "8.8.8.8", "ACCEPT",
			[]string{"POSTROUTING#1", "POSTROUTING#0"}},
		{"node to pod", iptables.IPv4, "192.168.1.10", "10.244.1.5", "ACCEPT",
			[]string{"POSTROUTING#1", "POSTROUTING#0"}},
		{"IPv6 pod to pod", iptables.IPv6, "fd00:10:244::5", "fd00:10:244:0:1::7", "ACCEPT",
			[]string{"POSTROUTING#1", "NODENET-POSTROUTING#1", "NODENET-MASQ#2", "POSTROUTING#0"}},
		{"IPv6 pod to outside", iptables.IPv6, "fd00:10:244::5", "2001:db8::1", "MASQUERADE",
			[]string{"POSTROUTING#1", "NODENET-POSTROUTING#1", "NODENET-MASQ#3"}},
		{"IPv6 node to outside", iptables.IPv6, "2001:db8:1::10", "2001:db8::1", "ACCEPT",
			[]string{"POSTROUTING#1", "POSTROUTING#0"}},
	}
	f := iptablestest.NewFake()
	for _, fam := range []iptables.Family{iptables.IPv4, iptables.IPv6} {
		m := iptables.NewManager(f, fam, nil)
		if err := m.Sync(t.Context(), iptables.MasqOwner, iptables.MasqueradeChains(fam, clusterCIDRs), false); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := iptablestest.NewTracer(f, tt.fam).Trace(iptables.TableNAT, "POSTROUTING", iptablestest.Packet{
				Src: addr(tt.src), Dst: addr(tt.dst), Proto: "tcp", DPort: 443, OutIface: "eth0",
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Verdict != tt.verdict {
				t.Errorf("verdict = %s, want %s", res.Verdict, tt.verdict)
			}
			if diff := cmp.Diff(tt.hops, res.Hops()); diff != "" {
				t.Errorf("path (-want +got):\n%s", diff)
			}
		})
	}
}
