package policy

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/nodenet/nodenet/datapath/iptables"
)

// TestDispatchScales: with 110 isolated pods on the node (kubelet's
// default maxPods), every pod's packets reach its own chain, and the
// dispatch costs a few dozen rules at most, not one per pod.
func TestDispatchScales(t *testing.T) {
	var pods []Pod
	for i := range 110 {
		pods = append(pods, Pod{Namespace: "x", Name: fmt.Sprintf("p%03d", i), Labels: map[string]string{"app": "web"}, Node: "node-1",
			IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 244, 1, byte(2 + i)}), netip.MustParseAddr(fmt.Sprintf("fd00:244:1::%x", 2+i))}})
	}
	m := Build(ps(pol("x", "deny", spec{PodSelector: *all(), PolicyTypes: ptypes{ingT, egrT}})), pods, nil)
	for _, fam := range []iptables.Family{iptables.IPv4, iptables.IPv6} {
		rs := m.Rules(RuleOptions{Family: fam, Node: "node-1"})
		checkRuleset(t, rs, fam)
		tr := newRuleTracer(rs)
		outside := netip.MustParseAddr("192.0.2.1")
		if fam == iptables.IPv6 {
			outside = netip.MustParseAddr("2001:db8::1")
		}
		worst := 0
		for _, p := range m.pods {
			ip := p.IPs[0]
			if fam == iptables.IPv6 {
				ip = p.IPs[1]
			}
			for _, pk := range []tracePacket{
				{src: outside, dst: ip, proto: "tcp", dport: 80},
				{src: ip, dst: outside, proto: "tcp", dport: 80},
			} {
				r, err := tr.trace(pk)
				if err != nil {
					t.Fatal(err)
				}
				d := ingress
				if pk.src == ip {
					d = egress
				}
				if want := podChain(d, p.key); r.verdict != "DROP" || r.path[len(r.path)-1] != want {
					t.Fatalf("%s %v: %s via %v, want DROP in %s", fam, pk, r.verdict, r.path, want)
				}
				worst = max(worst, r.evaluated)
			}
		}
		if worst > 30 {
			t.Errorf("%s: up to %d rules evaluated for 110 pods", fam, worst)
		}
		t.Logf("%s: at most %d rules evaluated (110 isolated pods), %d chains", fam, worst, len(rs.Filter))
	}
}
