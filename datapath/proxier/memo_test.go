package proxier

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/nodenet/nodenet/datapath/iptables"
	"github.com/nodenet/nodenet/datapath/proxy"
)

// testService i is a NodePort Service; svc1 is a LoadBalancer with
// externalTrafficPolicy Local (its health check node port is 32001).
func testService(i int) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: fmt.Sprintf("svc%d", i), UID: types.UID(fmt.Sprintf("uid%d", i)), ResourceVersion: "1"},
		Spec: corev1.ServiceSpec{ClusterIP: fmt.Sprintf("10.96.0.%d", i+1), Type: corev1.ServiceTypeNodePort,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, NodePort: int32(30000 + i)}}},
	}
	if i == 1 {
		svc.Spec.Type = corev1.ServiceTypeLoadBalancer
		svc.Spec.ExternalTrafficPolicy, svc.Spec.HealthCheckNodePort = corev1.ServiceExternalTrafficPolicyLocal, 32001
	}
	return svc
}

func testSlice(i int, rv string, ips ...string) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: fmt.Sprintf("svc%d-abc", i), ResourceVersion: rv,
			Labels: map[string]string{discoveryv1.LabelServiceName: fmt.Sprintf("svc%d", i)}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for _, ip := range ips {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}, NodeName: ptr.To("node-a")})
	}
	return s
}

func chainsByName(rs proxy.Ruleset) map[string]string {
	m := map[string]string{}
	for _, c := range rs.Chains() {
		var b strings.Builder
		for _, r := range c.Rules {
			b.WriteString(string(r) + "\n")
		}
		m[string(c.Table)+"/"+c.Name] = b.String()
	}
	return m
}

func ruleSlices(rs proxy.Ruleset) map[string]*iptables.Rule {
	m := map[string]*iptables.Rule{}
	for _, c := range rs.Chains() {
		if len(c.Rules) > 0 {
			m[c.Name] = &c.Rules[0]
		}
	}
	return m
}

// TestCompileMemo: the memoized compile gives what a fresh Build+Compile
// gives, rebuilds only the Services whose object or slices changed, and
// starts over when the settings change.
func TestCompileMemo(t *testing.T) {
	c := &Component{opts: Options{Node: "node-a", NodePortRange: [2]int{30000, 30002}}}
	bo := proxy.Options{Node: "node-a", Family: iptables.IPv4}
	co := proxy.CompileOptions{Family: iptables.IPv4, ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}}
	svcs := []*corev1.Service{testService(2), testService(0), testService(1), testService(3)}
	eps := []*discoveryv1.EndpointSlice{testSlice(0, "5", "10.244.1.1"), testSlice(1, "6", "10.244.1.2", "10.244.2.2"), testSlice(3, "7", "10.244.1.3")}

	fresh := func() (proxy.Ruleset, []proxy.ServicePort, int) {
		ports, skipped := c.inRange(proxy.Build(svcs, eps, bo))
		rs, err := proxy.Compile(ports, co)
		if err != nil {
			t.Fatal(err)
		}
		return rs, ports, skipped
	}
	m := &memo{}
	check := func(step string) compiled {
		t.Helper()
		got, err := c.compile(m, svcs, eps, bo, co)
		if err != nil {
			t.Fatal(err)
		}
		want, ports, skipped := fresh()
		if diff := cmp.Diff(chainsByName(want), chainsByName(got.rules)); diff != "" {
			t.Fatalf("%s: memoized compile differs from a fresh one (-fresh +memo):\n%s", step, diff)
		}
		var kept []proxy.ServicePort
		for i := range ports {
			if keep(&ports[i]) {
				kept = append(kept, ports[i])
			}
		}
		if got.nports != len(ports) || len(kept) == 0 || len(kept) == len(ports) {
			t.Errorf("%s: %d ports, fresh %d of which %d kept: the test needs both kinds", step, got.nports, len(ports), len(kept))
		}
		if diff := cmp.Diff(kept, got.kept, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" {
			t.Errorf("%s: kept ports differ from a fresh build's (-fresh +memo):\n%s", step, diff)
		}
		if got.skipped != skipped || got.skipped != 1 {
			t.Errorf("%s: skipped %d node ports, fresh %d, want 1 (svc3's 30003)", step, got.skipped, skipped)
		}
		return got
	}
	first := check("first")

	// svc1 loses an endpoint: a new slice version. Only its chain is new.
	eps[1] = testSlice(1, "8", "10.244.1.2")
	second := check("endpoint removed")
	a, b := ruleSlices(first.rules), ruleSlices(second.rules)
	var rebuilt []string
	for name, p := range b {
		if strings.HasPrefix(name, "NODENET-SVC-") && a[name] != p {
			rebuilt = append(rebuilt, name)
		}
	}
	if len(rebuilt) != 1 {
		t.Errorf("rebuilt SVC chains %v, want only svc1's", rebuilt)
	}

	// A deleted Service and a changed one.
	svcs = slices.Delete(svcs, 0, 1)
	svcs[0] = svcs[0].DeepCopy()
	svcs[0].ResourceVersion = "9"
	svcs[0].Spec.Ports[0].Port = 81
	check("service deleted and changed")
	if len(m.entries) != 3 {
		t.Errorf("memo holds %d services, want 3", len(m.entries))
	}

	// New settings: nothing is reused.
	co.MasqueradeAll = true
	before := ruleSlices(check("settings").rules)
	after := ruleSlices(check("settings again").rules)
	for name, p := range after {
		if strings.HasPrefix(name, "NODENET-SVC-") && before[name] != p {
			t.Errorf("%s rebuilt with nothing changed", name)
		}
	}
}
