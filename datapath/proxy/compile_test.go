package proxy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/nodenet/nodenet/datapath/iptables"
)

// goldenCases are the rulesets dumped to testdata/<name>.golden.
func goldenCases() []struct {
	name  string
	ports []ServicePort
	opts  CompileOptions
} {
	web := tcpPort("default", "web", "http", "10.96.0.10", 80,
		readyEP("10.244.1.5", 8080, "node-a"), readyEP("10.244.2.7", 8080, "node-b"))
	multi := []ServicePort{
		tcpPort("default", "multi", "http", "10.96.0.20", 80, readyEP("10.244.1.5", 8080, "node-a")),
		tcpPort("default", "multi", "https", "10.96.0.20", 443, readyEP("10.244.1.5", 8443, "node-a")),
		{Namespace: "kube-system", Name: "dns", PortName: "dns", Protocol: UDP, ClusterIP: a("10.96.0.53"), Port: 53,
			Endpoints: []Endpoint{readyEP("10.244.1.2", 53, "node-a"), readyEP("10.244.2.2", 53, "node-b"), readyEP("10.244.3.2", 53, "node-c")}},
	}
	nodePort := web
	nodePort.NodePort = 30080
	local := nodePort
	local.ExternalLocal = true
	affinity := web
	affinity.Affinity, affinity.AffinityTimeout = true, 600
	empty := tcpPort("default", "empty", "", "10.96.0.99", 80)
	empty.NodePort = 30099
	lb := web
	lb.NodePort = 30081
	lb.LoadBalancerIPs = []netip.Addr{a("203.0.113.5")}
	lb.SourceRanges = []netip.Prefix{pfx("198.51.100.0/24"), pfx("192.168.0.0/24")}
	ext := web
	ext.ExternalIPs = []netip.Addr{a("192.168.0.10"), a("203.0.113.9")}
	withNodeIPs := defaultOptions()
	withNodeIPs.NodeIPs = []netip.Addr{node}
	twoCIDRs := defaultOptions()
	twoCIDRs.ClusterCIDRs = append(twoCIDRs.ClusterCIDRs, pfx("10.245.0.0/16"))
	v6 := ServicePort{Namespace: "default", Name: "web6", PortName: "http", Protocol: TCP, ClusterIP: a("fd00:96::10"), Port: 80,
		NodePort: 30080, Affinity: true, AffinityTimeout: 10800, Endpoints: []Endpoint{
			{IP: a("fd00:244:1::5"), Port: 8080, Ready: true, Serving: true, Node: "node-a", Local: true}}}
	return []struct {
		name  string
		ports []ServicePort
		opts  CompileOptions
	}{
		{"clusterip", []ServicePort{web}, defaultOptions()},
		{"multiport", multi, twoCIDRs},
		{"nodeport", []ServicePort{nodePort}, defaultOptions()},
		{"externallocal", []ServicePort{local}, withNodeIPs},
		{"affinity", []ServicePort{affinity}, defaultOptions()},
		{"noendpoints", []ServicePort{empty}, defaultOptions()},
		{"loadbalancer", []ServicePort{lb}, withNodeIPs},
		{"externalips", []ServicePort{ext}, CompileOptions{Family: iptables.IPv4, ClusterCIDRs: []netip.Prefix{pod}, MasqueradeAll: true}},
		{"ipv6", []ServicePort{v6}, CompileOptions{Family: iptables.IPv6, ClusterCIDRs: []netip.Prefix{pfx("fd00:244::/48")}}},
	}
}

func TestCompileGolden(t *testing.T) {
	for _, tt := range goldenCases() {
		t.Run(tt.name, func(t *testing.T) {
			f, _, rs := apply(t, tt.ports, tt.opts)
			golden(t, tt.name, f.Dump(tt.opts.Family))
			// Deterministic: a second compile is identical.
			again, err := Compile(tt.ports, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := dumpRuleset(again), dumpRuleset(rs); got != want {
				t.Errorf("second compile differs")
			}
			for _, c := range rs.Chains() {
				if err := iptables.ValidateChainName(c.Name); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

func dumpRuleset(rs Ruleset) string {
	var b strings.Builder
	for _, c := range rs.Chains() {
		b.WriteString(string(c.Table) + " " + c.Name + "\n")
		for _, r := range c.Rules {
			b.WriteString("  " + string(r) + "\n")
		}
	}
	return b.String()
}

func TestCompileOptionsValidate(t *testing.T) {
	for _, tt := range []struct {
		o    CompileOptions
		want string
	}{
		{CompileOptions{}, "family"},
		{CompileOptions{Family: iptables.IPv4, MasqMark: "x"}, "not value/mask"},
		{CompileOptions{Family: iptables.IPv4, MasqMark: "0x4000/0x1000"}, "inside the mask"},
		{CompileOptions{Family: iptables.IPv4, MasqMark: "0"}, "non-zero"},
	} {
		if _, err := Compile(nil, tt.o); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Compile with %+v: err = %v, want %q", tt.o, err, tt.want)
		}
	}
	if err := (CompileOptions{Family: iptables.IPv6, MasqMark: "0x8000"}).Validate(); err != nil {
		t.Errorf("mark without mask: %v", err)
	}
}

func TestProbability(t *testing.T) {
	for n, want := range map[int]string{2: "0.50000000000", 3: "0.33333333349", 4: "0.25000000000", 7: "0.14285714272"} {
		if got := probability(n); got != want {
			t.Errorf("probability(%d) = %s, want %s", n, got, want)
		}
	}
}
