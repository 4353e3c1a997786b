package iptables_test

import (
	"net/netip"
	"testing"

	"github.com/nodenet/nodenet/datapath/iptables"
	"github.com/nodenet/nodenet/datapath/proxy"
)

// TestKernelSpelling: the Service proxy's rules, in every shape it writes,
// read back from iptables-save exactly as rendered, so that a full sync of
// an unchanged kernel writes nothing (a rule spelled otherwise would have
// its chain rewritten at every full sync: correct, but slow at scale).
func TestKernelSpelling(t *testing.T) {
	ep := func(ip string, local bool) proxy.Endpoint {
		return proxy.Endpoint{IP: netip.MustParseAddr(ip), Port: 8080, Ready: true, Serving: true, Local: local}
	}
	ports := func(v6 bool) []proxy.ServicePort {
		a := func(v4, v6s string) netip.Addr {
			if v6 {
				return netip.MustParseAddr(v6s)
			}
			return netip.MustParseAddr(v4)
		}
		p := func(v4, v6s string) netip.Prefix {
			if v6 {
				return netip.MustParsePrefix(v6s)
			}
			return netip.MustParsePrefix(v4)
		}
		e1, e2 := ep(a("10.244.1.5", "fd00:244:1::5").String(), true), ep(a("10.244.2.7", "fd00:244:2::7").String(), false)
		return []proxy.ServicePort{
			{Namespace: "default", Name: "web", PortName: "http", Protocol: proxy.TCP, ClusterIP: a("10.96.0.10", "fd00:96::10"), Port: 80,
				Endpoints: []proxy.Endpoint{e1, e2}},
			{Namespace: "default", Name: "sticky", Protocol: proxy.UDP, ClusterIP: a("10.96.0.11", "fd00:96::11"), Port: 53,
				Affinity: true, AffinityTimeout: 10800, Endpoints: []proxy.Endpoint{e1, e2}},
			{Namespace: "default", Name: "np", Protocol: proxy.TCP, ClusterIP: a("10.96.0.12", "fd00:96::12"), Port: 80, NodePort: 30080,
				ExternalLocal: true, HealthCheckNodePort: 32000, Endpoints: []proxy.Endpoint{e1, e2}},
			{Namespace: "default", Name: "lb", Protocol: proxy.TCP, ClusterIP: a("10.96.0.13", "fd00:96::13"), Port: 443, NodePort: 30443,
				LoadBalancerIPs: []netip.Addr{a("192.0.2.10", "2001:db8::10")}, SourceRanges: []netip.Prefix{p("198.51.100.0/24", "2001:db8:1::/48")},
				ExternalIPs: []netip.Addr{a("192.0.2.11", "2001:db8::11")}, Endpoints: []proxy.Endpoint{e2}},
			{Namespace: "default", Name: "local", Protocol: proxy.TCP, ClusterIP: a("10.96.0.14", "fd00:96::14"), Port: 80,
				InternalLocal: true, Endpoints: []proxy.Endpoint{e2}},
			{Namespace: "default", Name: "empty", Protocol: proxy.TCP, ClusterIP: a("10.96.0.15", "fd00:96::15"), Port: 80, NodePort: 30081},
		}
	}
	for _, mode := range modes {
		for _, fam := range []iptables.Family{iptables.IPv4, iptables.IPv6} {
			t.Run(string(mode)+"/"+fam.String(), func(t *testing.T) {
				r := netnsRunner(t, mode)
				v6 := fam == iptables.IPv6
				cidrs := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.245.0.0/16")}
				if v6 {
					cidrs = []netip.Prefix{netip.MustParsePrefix("fd00:244::/48"), netip.MustParsePrefix("fd00:245::/48")}
				}
				rs, err := proxy.Compile(ports(v6), proxy.CompileOptions{Family: fam, ClusterCIDRs: cidrs})
				if err != nil {
					t.Fatal(err)
				}
				p := newPair(t, r, fam)
				if err := p.kernel.Register(proxy.Owner, proxy.Prefixes()...); err != nil {
					t.Fatal(err)
				}
				if err := p.kernel.Sync(t.Context(), proxy.Owner, rs.Chains(), true); err != nil {
					t.Fatal(err)
				}
				p.runner.reset()
				if err := p.kernel.Sync(t.Context(), proxy.Owner, rs.Chains(), true); err != nil {
					t.Fatal(err)
				}
				if _, restores := p.runner.reset(); restores != 0 {
					t.Errorf("full sync of an unchanged kernel rewrote, so iptables-save spells these otherwise:\n%s",
						p.kernel.Rendered(proxy.Owner))
				}
			})
		}
	}
}
