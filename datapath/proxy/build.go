// Package proxy is the pure core of nodenet's Service proxy: it turns
// Services and EndpointSlices into a model (Build) and the model into
// iptables chains (Compile) for the iptables.Manager. See README.md.
package proxy

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/nodenet/nodenet/datapath/iptables"
)

// Protocol is a service port's L4 protocol.
type Protocol string

const (
	TCP  Protocol = "TCP"
	UDP  Protocol = "UDP"
	SCTP Protocol = "SCTP"
)

// lower is the protocol as iptables spells it.
func (p Protocol) lower() string { return strings.ToLower(string(p)) }

// Endpoint is one backend of a service port.
type Endpoint struct {
	IP                          netip.Addr
	Port                        int
	Ready, Serving, Terminating bool
	Node                        string
	Local                       bool // Node is this node
}

// ServicePort is one port of one Service in one address family, with
// what the rules need.
type ServicePort struct {
	Namespace, Name, PortName string
	Protocol                  Protocol
	ClusterIP                 netip.Addr
	Port                      int
	NodePort                  int // 0: none
	ExternalIPs               []netip.Addr
	LoadBalancerIPs           []netip.Addr   // status.loadBalancer.ingress[].ip of this family
	SourceRanges              []netip.Prefix // loadBalancerSourceRanges of this family
	ExternalLocal             bool           // externalTrafficPolicy Local, for an externally reachable service
	InternalLocal             bool           // internalTrafficPolicy Local
	HealthCheckNodePort       int
	Affinity                  bool       // sessionAffinity ClientIP
	AffinityTimeout           int        // seconds
	Endpoints                 []Endpoint // sorted by IP and port, deduplicated
}

// String is "namespace/name:port", or "namespace/name" for an unnamed port,
// as kube-proxy names service ports.
func (sp *ServicePort) String() string {
	s := sp.Namespace + "/" + sp.Name
	if sp.PortName != "" {
		s += ":" + sp.PortName
	}
	return s
}

// externallyReachable: traffic may arrive on a node port, external or
// load-balancer IP.
func (sp *ServicePort) externallyReachable() bool {
	return sp.NodePort != 0 || len(sp.ExternalIPs) > 0 || len(sp.LoadBalancerIPs) > 0
}

// Options say which node and family Build works for.
type Options struct {
	Node   string
	Family iptables.Family
}

const (
	// LabelServiceProxyName marks Services handled by another proxy.
	LabelServiceProxyName = "service.kubernetes.io/service-proxy-name"
	// defaultAffinityTimeout is the API default of
	// sessionAffinityConfig.clientIP.timeoutSeconds (3 hours).
	defaultAffinityTimeout = 10800
)

// Build turns Services and EndpointSlices into the service ports of one
// family, sorted by namespace, name, port name and protocol. Skipped:
// ExternalName and headless Services, Services labelled
// service.kubernetes.io/service-proxy-name (another proxy's), Services
// without a ClusterIP of the family, and ports of other protocols than
// TCP, UDP and SCTP. A slice belongs to the Service named by its
// kubernetes.io/service-name label in its namespace; slices of the other
// family (and FQDN ones) are ignored. An endpoint's port is the slice port
// with the service port's name and protocol: that is how a named
// targetPort arrives, resolved per endpoint by the EndpointSlice
// controller.
func Build(services []*corev1.Service, epSlices []*discoveryv1.EndpointSlice, o Options) []ServicePort {
	bySvc := SlicesByService(epSlices, o.Family)
	var out []ServicePort
	for _, svc := range services {
		if svc == nil {
			continue
		}
		out = append(out, BuildService(svc, bySvc[types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}], o)...)
	}
	slices.SortFunc(out, func(a, b ServicePort) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name),
			strings.Compare(a.PortName, b.PortName), strings.Compare(string(a.Protocol), string(b.Protocol)))
	})
	return out
}

// SlicesByService groups the slices of fam by namespace and service, each
// group sorted by slice name.
func SlicesByService(epSlices []*discoveryv1.EndpointSlice, fam iptables.Family) map[types.NamespacedName][]*discoveryv1.EndpointSlice {
	want := discoveryv1.AddressTypeIPv4
	if fam == iptables.IPv6 {
		want = discoveryv1.AddressTypeIPv6
	}
	bySvc := make(map[types.NamespacedName][]*discoveryv1.EndpointSlice, len(epSlices))
	for _, s := range epSlices {
		if s == nil || s.AddressType != want || s.Labels[discoveryv1.LabelServiceName] == "" {
			continue
		}
		k := types.NamespacedName{Namespace: s.Namespace, Name: s.Labels[discoveryv1.LabelServiceName]}
		bySvc[k] = append(bySvc[k], s)
	}
	for _, ss := range bySvc {
		slices.SortFunc(ss, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
	}
	return bySvc
}

// BuildService is Build for one Service and its slices of o.Family (as
// SlicesByService groups them), in the order of its ports.
func BuildService(svc *corev1.Service, ss []*discoveryv1.EndpointSlice, o Options) []ServicePort {
	if !proxied(svc) {
		return nil
	}
	cip := clusterIP(svc, o.Family)
	if !cip.IsValid() {
		return nil
	}
	var out []ServicePort
	for _, p := range svc.Spec.Ports {
		proto := Protocol(cmp.Or(p.Protocol, corev1.ProtocolTCP))
		if proto != TCP && proto != UDP && proto != SCTP {
			continue
		}
		sp := servicePort(svc, p, proto, cip, o.Family)
		sp.Endpoints = endpoints(ss, p.Name, proto, o.Node)
		out = append(out, sp)
	}
	return out
}

// proxied reports whether nodenet proxies svc at all.
func proxied(svc *corev1.Service) bool {
	if svc.Spec.Type == corev1.ServiceTypeExternalName || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return false
	}
	_, other := svc.Labels[LabelServiceProxyName]
	return !other
}

// clusterIP is svc's ClusterIP of fam, or the zero Addr.
func clusterIP(svc *corev1.Service, fam iptables.Family) netip.Addr {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 {
		ips = []string{svc.Spec.ClusterIP}
	}
	for _, s := range ips {
		if a, ok := parseAddr(s, fam); ok {
			return a
		}
	}
	return netip.Addr{}
}

// parseAddr parses s and reports whether it is an address of fam.
func parseAddr(s string, fam iptables.Family) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	a = a.Unmap()
	return a, a.Is4() == (fam == iptables.IPv4)
}

func servicePort(svc *corev1.Service, p corev1.ServicePort, proto Protocol, cip netip.Addr, fam iptables.Family) ServicePort {
	sp := ServicePort{
		Namespace: svc.Namespace, Name: svc.Name, PortName: p.Name,
		Protocol: proto, ClusterIP: cip, Port: int(p.Port),
		InternalLocal: svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal,
	}
	isLB := svc.Spec.Type == corev1.ServiceTypeLoadBalancer
	if isLB || svc.Spec.Type == corev1.ServiceTypeNodePort {
		sp.NodePort = int(p.NodePort)
	}
	for _, s := range svc.Spec.ExternalIPs {
		if a, ok := parseAddr(s, fam); ok && !slices.Contains(sp.ExternalIPs, a) {
			sp.ExternalIPs = append(sp.ExternalIPs, a)
		}
	}
	if isLB {
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			// An ingress in Proxy mode is reached through the load
			// balancer, never with the VIP as destination on the node.
			if ing.IPMode != nil && *ing.IPMode == corev1.LoadBalancerIPModeProxy {
				continue
			}
			if a, ok := parseAddr(ing.IP, fam); ok && !slices.Contains(sp.LoadBalancerIPs, a) {
				sp.LoadBalancerIPs = append(sp.LoadBalancerIPs, a)
			}
		}
		for _, s := range svc.Spec.LoadBalancerSourceRanges {
			pfx, err := netip.ParsePrefix(strings.TrimSpace(s))
			if err == nil && pfx.Addr().Is4() == (fam == iptables.IPv4) && !slices.Contains(sp.SourceRanges, pfx.Masked()) {
				sp.SourceRanges = append(sp.SourceRanges, pfx.Masked())
			}
		}
		if svc.Spec.HealthCheckNodePort != 0 {
			sp.HealthCheckNodePort = int(svc.Spec.HealthCheckNodePort)
		}
	}
	slices.SortFunc(sp.ExternalIPs, netip.Addr.Compare)
	slices.SortFunc(sp.LoadBalancerIPs, netip.Addr.Compare)
	slices.SortFunc(sp.SourceRanges, comparePrefix)
	sp.ExternalLocal = sp.externallyReachable() && svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
	if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		sp.Affinity, sp.AffinityTimeout = true, defaultAffinityTimeout
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			sp.AffinityTimeout = int(*c.ClientIP.TimeoutSeconds)
		}
	}
	return sp
}

func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

// endpoints collects the endpoints of one service port from its slices
// (sorted by name). An endpoint in several slices (while it moves between
// them) is kept once, its ready copy preferred, else the first.
func endpoints(ss []*discoveryv1.EndpointSlice, portName string, proto Protocol, node string) []Endpoint {
	type key struct {
		ip   netip.Addr
		port int
	}
	seen := map[key]int{}
	var out []Endpoint
	for _, s := range ss {
		port := 0
		for _, p := range s.Ports {
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			pp := Protocol(corev1.ProtocolTCP)
			if p.Protocol != nil {
				pp = Protocol(*p.Protocol)
			}
			if name == portName && pp == proto && p.Port != nil {
				port = int(*p.Port)
				break
			}
		}
		if port <= 0 || port > 65535 {
			continue
		}
		fam := iptables.IPv4
		if s.AddressType == discoveryv1.AddressTypeIPv6 {
			fam = iptables.IPv6
		}
		for _, e := range s.Endpoints {
			if len(e.Addresses) == 0 {
				continue
			}
			// Consumers use the first address (EndpointSlice API).
			ip, ok := parseAddr(e.Addresses[0], fam)
			if !ok {
				continue
			}
			ep := Endpoint{IP: ip, Port: port}
			// Unset conditions: ready and serving mean ready, terminating
			// means not terminating (API documentation).
			ep.Ready = e.Conditions.Ready == nil || *e.Conditions.Ready
			ep.Serving = ep.Ready
			if e.Conditions.Serving != nil {
				ep.Serving = *e.Conditions.Serving
			}
			ep.Terminating = e.Conditions.Terminating != nil && *e.Conditions.Terminating
			if e.NodeName != nil {
				ep.Node = *e.NodeName
			}
			ep.Local = node != "" && ep.Node == node
			k := key{ip, port}
			if i, dup := seen[k]; dup {
				if !out[i].Ready && ep.Ready {
					out[i] = ep
				}
				continue
			}
			seen[k] = len(out)
			out = append(out, ep)
		}
	}
	slices.SortFunc(out, func(a, b Endpoint) int { return cmp.Or(a.IP.Compare(b.IP), cmp.Compare(a.Port, b.Port)) })
	return out
}

// Usable is what a service port's traffic may go to.
type Usable struct {
	// Cluster is for traffic with the Cluster policy: the ready endpoints,
	// or when none is ready, the serving terminating ones.
	Cluster []Endpoint
	// Local is the same rule applied to the endpoints on this node alone.
	Local []Endpoint
}

// Categorize applies kube-proxy's endpoint rules: ready endpoints are used;
// serving-but-terminating ones only when no ready one exists, decided
// separately for the cluster-wide and the node-local set (so a node whose
// local endpoints are all terminating keeps serving them while other nodes
// have ready ones).
func Categorize(eps []Endpoint) Usable {
	return Usable{Cluster: usable(eps, false), Local: usable(eps, true)}
}

func usable(eps []Endpoint, localOnly bool) []Endpoint {
	var ready, terminating []Endpoint
	for _, e := range eps {
		switch {
		case localOnly && !e.Local:
		case e.Ready:
			ready = append(ready, e)
		case e.Serving && e.Terminating:
			terminating = append(terminating, e)
		}
	}
	if len(ready) > 0 {
		return ready
	}
	return terminating
}
