package policy

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodenet/nodenet/datapath/iptables"
)

func TestVerdict(t *testing.T) {
	pods, nsList := fixture()
	m := Build(ps(
		pol("x", "from-y", spec{PodSelector: xa, Ingress: []in{{From: []peerT{nss(lbl("ns", "y"))}}}}),
		pol("x", "from-b", spec{PodSelector: xa, Ingress: []in{{From: []peerT{podsP(lbl("pod", "b")), podsIn(all(), lbl("pod", "b"))}}}}),
		pol("y", "egress", spec{PodSelector: *all(), PolicyTypes: ptypes{egrT}, Egress: []out{{To: []peerT{ipb("10.244.1.0/24")}}}}),
	), pods, nsList)
	ip := func(p string) netip.Addr { return podIP(p, false) }
	for _, tt := range []struct {
		src, dst netip.Addr
		want     Verdict
	}{
		{ip("y/b"), ip("x/a"), Verdict{Allowed: true, IngressIsolated: true, EgressIsolated: true,
			IngressBy: []string{"x/from-b", "x/from-y"}, EgressBy: []string{"y/egress"},
			Reason: "egress of y/b allowed by y/egress; ingress of x/a allowed by x/from-b, x/from-y"}},
		{ip("y/b"), ip("x/b"), Verdict{EgressIsolated: true,
			Reason: "egress of y/b isolated by y/egress; no rule allows it"}},
		{ip("y/a"), ip("x/a"), Verdict{Allowed: true, IngressIsolated: true, EgressIsolated: true,
			IngressBy: []string{"x/from-y"}, EgressBy: []string{"y/egress"},
			Reason: "egress of y/a allowed by y/egress; ingress of x/a allowed by x/from-y"}},
		{ip("z/c"), ip("x/a"), Verdict{IngressIsolated: true,
			Reason: "ingress of x/a isolated by x/from-b, x/from-y; no rule allows it"}},
		{ip("z/c"), ip("x/b"), Verdict{Allowed: true, Reason: "neither end is isolated"}},
		{ip("x/a"), podIP("x/a", true), Verdict{Allowed: true, Reason: "loopback: x/a reaches itself"}},
		// IPv4-mapped addresses are the IPv4 ones.
		{netip.AddrFrom16(ip("z/c").As16()), ip("x/a"), Verdict{IngressIsolated: true,
			Reason: "ingress of x/a isolated by x/from-b, x/from-y; no rule allows it"}},
	} {
		got := m.Allowed(tt.src, tt.dst, tcpP, 80)
		if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("Allowed(%s, %s) (-want +got):\n%s", tt.src, tt.dst, diff)
		}
	}
}

// TestAddresses: peers and blocks against addresses outside the pods,
// and the pods Build leaves out.
func TestAddresses(t *testing.T) {
	pods, nsList := fixture()
	host := Pod{Namespace: "x", Name: "host", Labels: map[string]string{"pod": "b"}, IPs: []netip.Addr{nodeIP(1, false)}, Node: "node-1", HostNetwork: true}
	pending := Pod{Namespace: "x", Name: "pending", Labels: map[string]string{"pod": "b"}, Node: "node-1"}
	dup := Pod{Namespace: "z", Name: "zz-dup", Labels: map[string]string{"pod": "b"}, IPs: []netip.Addr{podIP("x/c", false)}, Node: "node-1"}
	pods = append(pods, host, pending, dup)
	outside, node := netip.MustParseAddr("192.0.2.1"), nodeIP(1, false)
	for _, tt := range []struct {
		name   string
		from   []peerT
		allows map[netip.Addr]bool
	}{
		{"nil from: every address", nil, map[netip.Addr]bool{outside: true, node: true, podIP("x/c", false): true}},
		{"all namespaces: pods only", []peerT{nss(all())}, map[netip.Addr]bool{outside: false, node: false, podIP("z/c", false): true}},
		// The hostNetwork pod labelled pod=b is not a peer: its address
		// is the node's. The IP of x/c is x/c's, not the later duplicate's.
		{"pod=b: hostNetwork and duplicate excluded", []peerT{podsP(lbl("pod", "b"))}, map[netip.Addr]bool{node: false, podIP("x/b", false): true, podIP("x/c", false): false}},
		{"ipBlock matches pod IPs too", []peerT{ipb("0.0.0.0/0", "10.244.2.0/24")},
			map[netip.Addr]bool{outside: true, node: true, podIP("x/c", false): true, podIP("x/b", false): false, podIP("x/b", true): false}},
		{"ipBlock wholly excepted", []peerT{ipb("10.244.0.0/16", "10.0.0.0/8")}, map[netip.Addr]bool{podIP("x/c", false): false}},
		{"ipBlock halves excepted", []peerT{ipb("0.0.0.0/0", "0.0.0.0/1", "128.0.0.0/1")}, map[netip.Addr]bool{outside: false, podIP("x/c", false): false}},
		{"invalid peer and selector match nothing", []peerT{{}, podsP(expr("pod", "Bogus", "b"))}, map[netip.Addr]bool{outside: false, podIP("x/b", false): false}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := Build(ps(pol("x", "p", spec{PodSelector: xa, Ingress: []in{{From: tt.from}}})), pods, nsList)
			for src, want := range tt.allows {
				if got := m.Allowed(src, podIP("x/a", false), tcpP, 80); got.Allowed != want {
					t.Errorf("%s -> x/a: %+v, want allowed=%v", src, got, want)
				}
			}
			// The rules of x/a's node agree (no egress policies here).
			for _, v6 := range []bool{false, true} {
				fam := iptables.IPv4
				if v6 {
					fam = iptables.IPv6
				}
				rs := m.Rules(RuleOptions{Family: fam, Node: "node-1", NodeIPs: []netip.Addr{netip.MustParseAddr("192.168.99.1")}})
				tr := newRuleTracer(rs)
				for src, want := range tt.allows {
					if src.Is6() != v6 {
						continue
					}
					r, err := tr.trace(tracePacket{src: src, dst: podIP("x/a", v6), proto: "tcp", dport: 80})
					if err != nil {
						t.Fatal(err)
					}
					if (r.verdict != "DROP") != want {
						t.Errorf("rules: %s -> x/a: %s via %v, want allowed=%v", src, r.verdict, r.path, want)
					}
				}
				checkRuleset(t, rs, fam)
			}
		})
	}
}

func TestPodFromCore(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "a", Labels: map[string]string{"pod": "a"}},
		Spec: corev1.PodSpec{NodeName: "node-1",
			Containers: []corev1.Container{{Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}}}},
			InitContainers: []corev1.Container{
				{Ports: []corev1.ContainerPort{{Name: "init", ContainerPort: 1}}},
				{RestartPolicy: &always, Ports: []corev1.ContainerPort{{Name: "sidecar", ContainerPort: 9090}}},
			}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: "10.244.1.10"}, {IP: "fd00::10"}, {IP: "bogus"}}}}
	got, ok := PodFromCore(p)
	want := Pod{Namespace: "x", Name: "a", Labels: map[string]string{"pod": "a"}, Node: "node-1",
		IPs:   []netip.Addr{netip.MustParseAddr("10.244.1.10"), netip.MustParseAddr("fd00::10")},
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}, {Name: "sidecar", ContainerPort: 9090}}}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); !ok || diff != "" {
		t.Errorf("PodFromCore ok=%v (-want +got):\n%s", ok, diff)
	}
	for name, mod := range map[string]func(*corev1.Pod){
		"hostNetwork": func(p *corev1.Pod) { p.Spec.HostNetwork = true },
		"no IP":       func(p *corev1.Pod) { p.Status.PodIPs = nil },
		"succeeded":   func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded },
	} {
		q := p.DeepCopy()
		mod(q)
		if _, ok := PodFromCore(q); ok {
			t.Errorf("%s: ok, want skipped", name)
		}
	}
}
