package main

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/nodenet/nodenet/test/bench/internal/benchkit"
)

// The objects every agent sees: Services without selectors, each with one
// EndpointSlice we write ourselves, so no pod networking is needed.
const (
	benchNS      = "bench-proxy"
	portName     = "http"
	servicePort  = 80
	endpointPort = 8080
	perService   = 10 // endpoints of each filler Service
	targetName   = "target"
)

var (
	// fillerBase: filler endpoints, addresses nobody answers (outside the
	// cluster, service and underlay CIDRs).
	fillerBase = netip.MustParseAddr("10.128.0.0")
	// changedBase: the fresh endpoint addresses the latency phase writes.
	changedBase = netip.MustParseAddr("10.160.0.0")
)

// objects creates and tracks the Services; the target Service's one
// endpoint is the backend host, every filler has perService fake ones.
type objects struct {
	client  kubernetes.Interface
	workers int

	mu        sync.Mutex // guards fillers, lastEP and changed
	fillers   int        // filler Services created: svc-000000 .. fillers-1
	lastEP    map[string]netip.Addr
	changed   int // endpoint addresses handed out by nextChanged
	targetVIP string
}

func fillerName(i int) string { return fmt.Sprintf("svc-%06d", i) }

// fillerEndpoints are filler i's endpoint addresses.
func fillerEndpoints(i int) []netip.Addr {
	out := make([]netip.Addr, perService)
	base := fillerBase.As4()
	v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	for j := range out {
		a := v + uint32(i*perService+j+1)
		out[j] = netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)})
	}
	return out
}

// setup creates the namespace and the target Service pointing at backend.
func (o *objects) setup(ctx context.Context, backend netip.Addr) error {
	o.lastEP = map[string]netip.Addr{}
	if _, err := o.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNS}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %s: %w", benchNS, err)
	}
	vip, err := o.create(ctx, targetName, []netip.Addr{backend})
	if err != nil {
		return err
	}
	o.targetVIP = vip
	return nil
}

// grow creates filler Services until there are n, concurrently.
func (o *objects) grow(ctx context.Context, n int) error {
	o.mu.Lock()
	from := o.fillers
	o.mu.Unlock()
	if n <= from {
		return nil
	}
	err := benchkit.Parallel(ctx, n-from, o.workers, func(i int) error {
		_, err := o.create(ctx, fillerName(from+i), fillerEndpoints(from+i))
		return err
	})
	if err != nil {
		return err
	}
	o.mu.Lock()
	o.fillers = n
	o.mu.Unlock()
	return nil
}

// create writes one selector-less Service and its EndpointSlice and returns
// the ClusterIP.
func (o *objects) create(ctx context.Context, name string, eps []netip.Addr) (string, error) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: benchNS},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{
			Name: portName, Port: servicePort, TargetPort: intstr.FromInt32(endpointPort), Protocol: corev1.ProtocolTCP,
		}}},
	}
	created, err := o.client.CoreV1().Services(benchNS).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("create service %s: %w", name, err)
	}
	if _, err := o.client.DiscoveryV1().EndpointSlices(benchNS).Create(ctx, slice(name, eps), metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("create endpointslice of %s: %w", name, err)
	}
	o.mu.Lock()
	o.lastEP[name] = eps[len(eps)-1]
	o.mu.Unlock()
	return created.Spec.ClusterIP, nil
}

func slice(svc string, eps []netip.Addr) *discoveryv1.EndpointSlice {
	port, proto, ready := int32(endpointPort), corev1.ProtocolTCP, true
	name := portName
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: svc + "-1", Namespace: benchNS, Labels: map[string]string{
			discoveryv1.LabelServiceName: svc,
			discoveryv1.LabelManagedBy:   "bench-proxy",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
	}
	for _, ep := range eps {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{ep.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
		})
	}
	return s
}

// last is the most recently created filler (the target when there is
// none) and its last endpoint: an agent that programmed it programmed
// everything, since all objects exist before the agent starts.
func (o *objects) last() (string, netip.Addr) {
	o.mu.Lock()
	defer o.mu.Unlock()
	name := targetName
	if o.fillers > 0 {
		name = fillerName(o.fillers - 1)
	}
	return name, o.lastEP[name]
}

// count is how many filler Services exist.
func (o *objects) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.fillers
}

// endpoints is how many DNAT rules a complete ruleset holds.
func (o *objects) endpoints() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.fillers*perService + 1
}

// lastChanged is the endpoint address replaceEndpoint wrote last.
func (o *objects) lastChanged() netip.Addr {
	o.mu.Lock()
	defer o.mu.Unlock()
	b := changedBase.As4()
	b[2], b[3] = byte(o.changed>>8), byte(o.changed)
	return netip.AddrFrom4(b)
}

// replaceEndpoint swaps the first endpoint of svc's slice for a fresh
// address and returns it together with the moment the write returned.
func (o *objects) replaceEndpoint(ctx context.Context, svc string) (netip.Addr, time.Time, error) {
	s, err := o.client.DiscoveryV1().EndpointSlices(benchNS).Get(ctx, svc+"-1", metav1.GetOptions{})
	if err != nil {
		return netip.Addr{}, time.Time{}, fmt.Errorf("get endpointslice of %s: %w", svc, err)
	}
	o.mu.Lock()
	o.changed++
	b := changedBase.As4()
	b[2], b[3] = byte(o.changed>>8), byte(o.changed)
	o.mu.Unlock()
	ip := netip.AddrFrom4(b)
	s.Endpoints[0].Addresses = []string{ip.String()}
	if _, err := o.client.DiscoveryV1().EndpointSlices(benchNS).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		return netip.Addr{}, time.Time{}, fmt.Errorf("update endpointslice of %s: %w", svc, err)
	}
	return ip, time.Now(), nil
}
