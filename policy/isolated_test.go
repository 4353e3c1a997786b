package policy

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestIsolated(t *testing.T) {
	pods := []Pod{
		{Namespace: "x", Name: "a", Labels: map[string]string{"pod": "a"}, IPs: []netip.Addr{netip.MustParseAddr("10.244.0.2")}, Node: "n1"},
		{Namespace: "x", Name: "b", Labels: map[string]string{"pod": "b"}, IPs: []netip.Addr{netip.MustParseAddr("10.244.0.3")}, Node: "n2"},
		{Namespace: "y", Name: "c", Labels: map[string]string{"pod": "c"}, IPs: []netip.Addr{netip.MustParseAddr("10.244.0.4")}, Node: "n1"},
	}
	nps := []*networkingv1.NetworkPolicy{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "deny"}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "eg"}, Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}}},
	}
	got := Build(nps, pods, []Namespace{{Name: "x"}, {Name: "y"}}).Isolated()
	want := []Isolation{
		{Pod: "x/a", Node: "n1", Ingress: []string{"x/deny"}, Egress: []string{"x/eg"}},
		{Pod: "x/b", Node: "n2", Ingress: []string{"x/deny"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
}
