package proxier

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/nodenet/nodenet/datapath/iptables"
	"github.com/nodenet/nodenet/datapath/proxy"
)

// emptyKernel is a Runner whose tables hold only the built-in chains and
// which accepts every restore: the Go side of a sync, alone.
type emptyKernel struct{}

func (emptyKernel) Save(context.Context, iptables.Family, iptables.Table) ([]byte, error) {
	return []byte("*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n" +
		"*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"), nil
}
func (emptyKernel) Restore(context.Context, iptables.Family, []byte, bool) error { return nil }

// BenchmarkEndpointChange10k is one partial sync (compile + Manager, no
// kernel) after one EndpointSlice of 10,000 Services with 10 remote
// endpoints each changed.
func BenchmarkEndpointChange10k(b *testing.B) {
	c := &Component{opts: Options{Node: "node-a", NodePortRange: [2]int{30000, 32767}}}
	bo := proxy.Options{Node: "node-a", Family: iptables.IPv4}
	co := proxy.CompileOptions{Family: iptables.IPv4, ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}}
	var svcs []*corev1.Service
	var eps []*discoveryv1.EndpointSlice
	for i := range 10000 {
		s := testService(i)
		s.Spec.Type, s.Spec.Ports[0].NodePort = corev1.ServiceTypeClusterIP, 0
		s.Spec.ClusterIP = fmt.Sprintf("10.96.%d.%d", i>>8, i&255)
		svcs = append(svcs, s)
		var ips []string
		for j := range 10 {
			k := i*10 + j
			ips = append(ips, fmt.Sprintf("10.%d.%d.%d", 200+k>>16, (k>>8)&255, k&255))
		}
		sl := testSlice(i, "1", ips...)
		for j := range sl.Endpoints {
			sl.Endpoints[j].NodeName = &[]string{"node-b"}[0]
		}
		eps = append(eps, sl)
	}
	m := &memo{}
	mgr := iptables.NewManager(emptyKernel{}, iptables.IPv4, slog.New(slog.DiscardHandler))
	sync := func(full bool) {
		out, err := c.compile(m, svcs, eps, bo, co)
		if err != nil {
			b.Fatal(err)
		}
		if err := mgr.Sync(b.Context(), Owner, out.rules.Chains(), full); err != nil {
			b.Fatal(err)
		}
	}
	sync(true)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		eps[5] = testSlice(5, fmt.Sprint(i+2), "10.250.0.1", fmt.Sprintf("10.250.%d.%d", (i>>8)&255, i&255))
		sync(false)
	}
}
