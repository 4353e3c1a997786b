package nodeinfo

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestCompute(t *testing.T) {
	addr := func(typ corev1.NodeAddressType, a string) corev1.NodeAddress {
		return corev1.NodeAddress{Type: typ, Address: a}
	}
	tests := []struct {
		name     string
		spec     corev1.NodeSpec
		addrs    []corev1.NodeAddress
		override []string
		want     *Info
		wantErr  string
	}{
		{"dual stack", corev1.NodeSpec{PodCIDR: "10.244.1.0/24", PodCIDRs: []string{"10.244.1.0/24", "fd00:1::/64"}},
			[]corev1.NodeAddress{addr(corev1.NodeHostName, "n1"), addr(corev1.NodeInternalIP, "10.0.0.1"), addr(corev1.NodeExternalIP, "1.2.3.4")}, nil,
			&Info{Name: "n1", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd00:1::/64")}, Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}, ""},
		{"only the old podCIDR field", corev1.NodeSpec{PodCIDR: "10.244.2.0/24"},
			[]corev1.NodeAddress{addr(corev1.NodeInternalIP, "10.0.0.2")}, nil,
			&Info{Name: "n1", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}, Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.2")}}, ""},
		{"override addresses", corev1.NodeSpec{PodCIDR: "10.244.2.0/24"},
			[]corev1.NodeAddress{addr(corev1.NodeInternalIP, "10.0.0.2")}, []string{"192.0.2.9"},
			&Info{Name: "n1", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}, Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.9")}}, ""},
		{"no podCIDR", corev1.NodeSpec{}, []corev1.NodeAddress{addr(corev1.NodeInternalIP, "10.0.0.2")}, nil, nil, "has no spec.podCIDR yet"},
		{"bad podCIDR", corev1.NodeSpec{PodCIDRs: []string{"nonsense"}}, nil, nil, nil, `bad podCIDR "nonsense"`},
		{"no internal IP", corev1.NodeSpec{PodCIDR: "10.244.2.0/24"}, []corev1.NodeAddress{addr(corev1.NodeExternalIP, "1.2.3.4")}, nil, nil, "no InternalIP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: tt.spec, Status: corev1.NodeStatus{Addresses: tt.addrs}}
			var override []netip.Addr
			for _, o := range tt.override {
				override = append(override, netip.MustParseAddr(o))
			}
			got, err := Compute(node, override)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}
