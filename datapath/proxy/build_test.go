package proxy

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodenet/nodenet/datapath/iptables"
)

func ptr[T any](v T) *T { return &v }

func service(name string, mutate func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromString("web")}},
		},
	}
	if mutate != nil {
		mutate(s)
	}
	return s
}

type sliceEP struct {
	ip, node                    string
	ready, serving, terminating *bool
}

func slice(name, svc string, at discoveryv1.AddressType, ports map[string]int32, eps ...sliceEP) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: at,
	}
	for n, p := range ports {
		s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: ptr(n), Protocol: ptr(corev1.ProtocolTCP), Port: ptr(p)})
	}
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{e.ip}, NodeName: ptr(e.node),
			Conditions: discoveryv1.EndpointConditions{Ready: e.ready, Serving: e.serving, Terminating: e.terminating}})
	}
	return s
}

func TestBuild(t *testing.T) {
	yes, no := ptr(true), ptr(false)
	opts := Options{Node: "node-a", Family: iptables.IPv4}
	dual := func(s *corev1.Service) {
		s.Spec.ClusterIPs = []string{"10.96.0.10", "fd00:96::10"}
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	}
	tests := []struct {
		name     string
		services []*corev1.Service
		slices   []*discoveryv1.EndpointSlice
		opts     Options
		want     []ServicePort
	}{{
		name:     "named target port resolved per endpoint by the slice port name",
		services: []*corev1.Service{service("web", nil)},
		slices: []*discoveryv1.EndpointSlice{
			slice("web-a", "web", discoveryv1.AddressTypeIPv4, map[string]int32{"http": 8080}, sliceEP{ip: "10.244.1.5", node: "node-a"}),
			slice("web-b", "web", discoveryv1.AddressTypeIPv4, map[string]int32{"http": 9090}, sliceEP{ip: "10.244.2.7", node: "node-b"}),
			slice("web-c", "web", discoveryv1.AddressTypeIPv4, map[string]int32{"metrics": 9100}, sliceEP{ip: "10.244.3.3", node: "node-c"}),
			slice("other", "other", discoveryv1.AddressTypeIPv4, map[string]int32{"http": 1}, sliceEP{ip: "10.244.9.9", node: "node-a"}),
		},
		opts: opts,
		want: []ServicePort{{Namespace: "ns", Name: "web", PortName: "http", Protocol: TCP, ClusterIP: a("10.96.0.10"), Port: 80,
			Endpoints: []Endpoint{
				{IP: a("10.244.1.5"), Port: 8080, Ready: true, Serving: true, Node: "node-a", Local: true},
				{IP: a("10.244.2.7"), Port: 9090, Ready: true, Serving: true, Node: "node-b"},
			}}},
	}, {
		name:     "conditions, duplicates across slices prefer the ready copy",
		services: []*corev1.Service{service("web", nil)},
		slices: []*discoveryv1.EndpointSlice{
			slice("web-a", "web", discoveryv1.AddressTypeIPv4, map[string]int32{"http": 8080},
				sliceEP{ip: "10.244.1.5", node: "node-a", ready: no, serving: yes, terminating: yes},
				sliceEP{ip: "10.244.1.6", node: "node-a", ready: no}),
			slice("web-b", "web", discoveryv1.AddressTypeIPv4, map[string]int32{"http": 8080},
				sliceEP{ip: "10.244.1.6", node: "node-a", ready: yes}),
		},
		opts: opts,
		want: []ServicePort{{Namespace: "ns", Name: "web", PortName: "http", Protocol: TCP, ClusterIP: a("10.96.0.10"), Port: 80,
			Endpoints: []Endpoint{
				{IP: a("10.244.1.5"), Port: 8080, Serving: true, Terminating: true, Node: "node-a", Local: true},
				{IP: a("10.244.1.6"), Port: 8080, Ready: true, Serving: true, Node: "node-a", Local: true},
			}}},
	}, {
		name:     "dual stack: the IPv6 model takes the IPv6 ClusterIP and slices",
		services: []*corev1.Service{service("web", dual)},
		slices: []*discoveryv1.EndpointSlice{
			slice("web-4", "web", discoveryv1.AddressTypeIPv4, map[string]int32{"http": 8080}, sliceEP{ip: "10.244.1.5", node: "node-a"}),
			slice("web-6", "web", discoveryv1.AddressTypeIPv6, map[string]int32{"http": 8080}, sliceEP{ip: "fd00:244::5", node: "node-b"}),
		},
		opts: Options{Node: "node-a", Family: iptables.IPv6},
		want: []ServicePort{{Namespace: "ns", Name: "web", PortName: "http", Protocol: TCP, ClusterIP: a("fd00:96::10"), Port: 80,
			Endpoints: []Endpoint{{IP: a("fd00:244::5"), Port: 8080, Ready: true, Serving: true, Node: "node-b"}}}},
	}, {
		name: "skipped: ExternalName, headless, other proxy, other family only, other protocols",
		services: []*corev1.Service{
			service("extname", func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeExternalName }),
			service("headless", func(s *corev1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "None", []string{"None"} }),
			service("other-proxy", func(s *corev1.Service) { s.Labels = map[string]string{LabelServiceProxyName: "x"} }),
			service("v6only", func(s *corev1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "fd00::1", []string{"fd00::1"} }),
			service("icmp", func(s *corev1.Service) { s.Spec.Ports[0].Protocol = "ICMP" }),
		},
		opts: opts,
	}, {
		name: "load balancer: node port, LB IPs of the family, ranges, policies, affinity",
		services: []*corev1.Service{service("lb", func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			s.Spec.Ports[0].NodePort = 30080
			s.Spec.ExternalIPs = []string{"203.0.113.9", "2001:db8::9"}
			s.Spec.LoadBalancerSourceRanges = []string{"198.51.100.0/24", " 192.0.2.1/24", "2001:db8::/32"}
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal)
			s.Spec.HealthCheckNodePort = 31000
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{
				{IP: "203.0.113.5"}, {IP: "2001:db8::5"}, {IP: "203.0.113.6", IPMode: ptr(corev1.LoadBalancerIPModeProxy)}, {Hostname: "lb.example"}}
		})},
		opts: opts,
		want: []ServicePort{{Namespace: "ns", Name: "lb", PortName: "http", Protocol: TCP, ClusterIP: a("10.96.0.10"), Port: 80,
			NodePort: 30080, ExternalIPs: []netipAddr{a("203.0.113.9")}, LoadBalancerIPs: []netipAddr{a("203.0.113.5")},
			SourceRanges:  []netipPrefix{pfx("192.0.2.0/24"), pfx("198.51.100.0/24")},
			ExternalLocal: true, InternalLocal: true, HealthCheckNodePort: 31000, Affinity: true, AffinityTimeout: 10800}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Build(tt.services, tt.slices, tt.opts)
			if diff := cmp.Diff(tt.want, got, cmpAddrs); diff != "" {
				t.Errorf("Build (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCategorize(t *testing.T) {
	ready := func(ip string, local bool) Endpoint {
		return Endpoint{IP: a(ip), Ready: true, Serving: true, Local: local}
	}
	term := func(ip string, local bool) Endpoint {
		return Endpoint{IP: a(ip), Serving: true, Terminating: true, Local: local}
	}
	gone := func(ip string, local bool) Endpoint { // terminating, not serving
		return Endpoint{IP: a(ip), Terminating: true, Local: local}
	}
	notReady := func(ip string, local bool) Endpoint { return Endpoint{IP: a(ip), Local: local} }
	ips := func(eps []Endpoint) []string {
		var out []string
		for _, e := range eps {
			out = append(out, e.IP.String())
		}
		return out
	}
	for _, tt := range []struct {
		name                string
		eps                 []Endpoint
		wantCluster, wantLo []string
	}{
		{"none", nil, nil, nil},
		{"ready only", []Endpoint{ready("10.0.0.1", true), ready("10.0.0.2", false)}, []string{"10.0.0.1", "10.0.0.2"}, []string{"10.0.0.1"}},
		{"terminating ignored while a ready one exists", []Endpoint{term("10.0.0.1", true), ready("10.0.0.2", false)}, []string{"10.0.0.2"}, []string{"10.0.0.1"}},
		{"all terminating: serving ones used", []Endpoint{term("10.0.0.1", false), gone("10.0.0.2", false), term("10.0.0.3", true)}, []string{"10.0.0.1", "10.0.0.3"}, []string{"10.0.0.3"}},
		{"not ready, not terminating: unused", []Endpoint{notReady("10.0.0.1", true)}, nil, nil},
		{"local fallback independent of the cluster", []Endpoint{ready("10.0.0.1", false), gone("10.0.0.2", true), term("10.0.0.3", true)}, []string{"10.0.0.1"}, []string{"10.0.0.3"}},
	} {
		u := Categorize(tt.eps)
		if !cmp.Equal(ips(u.Cluster), tt.wantCluster) || !cmp.Equal(ips(u.Local), tt.wantLo) {
			t.Errorf("%s: cluster %v local %v, want %v and %v", tt.name, ips(u.Cluster), ips(u.Local), tt.wantCluster, tt.wantLo)
		}
	}
}
