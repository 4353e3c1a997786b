// Package policy is the pure core of nodenet's NetworkPolicy
// implementation: Build compiles NetworkPolicies, pods and namespaces into
// a Model; Model.Allowed answers reachability questions from it and
// Model.Rules renders, for one node, the iptables chains and ipsets that
// enforce the same decisions. No kernel access here; see README.md.
package policy

import (
	"cmp"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Pod is what policy needs to know of a pod.
type Pod struct {
	Namespace, Name string
	Labels          map[string]string
	IPs             []netip.Addr
	Node            string
	// Ports are the container ports of all containers, flattened: named
	// ports are resolved against them.
	Ports []corev1.ContainerPort
	// HostNetwork pods use the node's addresses: they are neither
	// targets nor peers (their traffic is the node's).
	HostNetwork bool
}

// Namespace is a namespace's name and labels.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// Model is the compiled, queryable state: which policies isolate which
// pod, and every peer resolved to its members. Allowed and Rules both
// read it, so the rules enforce exactly what Allowed answers. A Model is
// immutable once built and safe for concurrent use.
type Model struct {
	pods     []*podInfo // sorted by namespace/name
	byIP     map[netip.Addr]*podInfo
	policies []*compiled // sorted by namespace/name
}

// podInfo is a pod with the policies that isolate it.
type podInfo struct {
	Pod
	key             string // namespace/name
	ingress, egress []*compiled
}

// compiled is one NetworkPolicy.
type compiled struct {
	key             string // namespace/name
	namespace       string
	selector        labels.Selector
	ingress, egress bool // policyTypes, defaults applied
	ingressRules    []rule
	egressRules     []rule
}

// rule is one ingress or egress rule: traffic matching one of peers (or
// anything, allPeers) and one of ports (or anything, allPorts) is allowed.
// The flags are kept apart from the lists: a list whose every entry was
// unusable (an unsupported protocol) matches nothing, not everything.
type rule struct {
	allPeers bool
	peers    []*peer
	allPorts bool
	ports    []port
}

// peer is a resolved NetworkPolicyPeer. Equal peers of different policies
// are one peer (and one ipset).
type peer struct {
	key   string // canonical description; the set name is its hash
	block bool   // ipBlock; otherwise a pod peer
	// ipBlock: prefix minus except (only excepts inside prefix are kept).
	prefix netip.Prefix
	except []netip.Prefix
	// empty is an ipBlock whose except covers it, or an invalid peer.
	empty bool
	// members are the pods a pod peer selects, sorted.
	members []*podInfo
	ips     map[netip.Addr]bool // members' IPs
}

// port is one NetworkPolicyPort of a supported protocol.
type port struct {
	proto  corev1.Protocol
	any    bool // no port given: every port of proto
	lo, hi int  // numeric port, or range with endPort
	name   string
}

// metadataNameLabel is set by the API server on every namespace; added
// here too so hand-made namespaces behave the same.
const metadataNameLabel = "kubernetes.io/metadata.name"

// Build compiles the API objects. Skipped, never errors (the API server
// validated the objects; what still does not make sense selects nothing):
// nil policies, hostNetwork pods and pods without IPs, and a pod whose IP
// an earlier pod (by namespace/name) already has. Invalid label selectors
// select nothing.
func Build(policies []*networkingv1.NetworkPolicy, pods []Pod, namespaces []Namespace) *Model {
	m := &Model{byIP: map[netip.Addr]*podInfo{}}
	nsLabels := map[string]labels.Set{}
	for _, ns := range namespaces {
		l := labels.Set{metadataNameLabel: ns.Name}
		for k, v := range ns.Labels {
			l[k] = v
		}
		nsLabels[ns.Name] = l
	}
	for _, p := range pods {
		if p.HostNetwork || len(p.IPs) == 0 {
			continue
		}
		m.pods = append(m.pods, &podInfo{Pod: p, key: p.Namespace + "/" + p.Name})
	}
	slices.SortFunc(m.pods, func(a, b *podInfo) int { return cmp.Compare(a.key, b.key) })
	m.pods = slices.CompactFunc(m.pods, func(a, b *podInfo) bool { return a.key == b.key })
	for _, p := range m.pods {
		ips := make([]netip.Addr, 0, len(p.IPs))
		for _, ip := range p.IPs {
			ip = ip.Unmap()
			if !ip.IsValid() || m.byIP[ip] != nil {
				continue
			}
			m.byIP[ip] = p
			ips = append(ips, ip)
		}
		p.IPs = ips
	}

	b := builder{m: m, nsLabels: nsLabels, peers: map[string]*peer{}}
	for _, np := range policies {
		if np != nil {
			m.policies = append(m.policies, b.policy(np))
		}
	}
	slices.SortFunc(m.policies, func(a, b *compiled) int { return cmp.Compare(a.key, b.key) })
	m.policies = slices.CompactFunc(m.policies, func(a, b *compiled) bool { return a.key == b.key })
	for _, c := range m.policies {
		for _, p := range m.pods {
			if p.Namespace != c.namespace || !c.selector.Matches(labels.Set(p.Labels)) {
				continue
			}
			if c.ingress {
				p.ingress = append(p.ingress, c)
			}
			if c.egress {
				p.egress = append(p.egress, c)
			}
		}
	}
	return m
}

// builder holds what Build shares between policies.
type builder struct {
	m        *Model
	nsLabels map[string]labels.Set
	peers    map[string]*peer // by key
}

func (b *builder) policy(np *networkingv1.NetworkPolicy) *compiled {
	c := &compiled{key: np.Namespace + "/" + np.Name, namespace: np.Namespace, selector: selector(&np.Spec.PodSelector)}
	if len(np.Spec.PolicyTypes) == 0 {
		// The API's default: every policy affects ingress; egress only
		// when it has egress rules.
		c.ingress, c.egress = true, len(np.Spec.Egress) > 0
	}
	for _, t := range np.Spec.PolicyTypes {
		c.ingress = c.ingress || t == networkingv1.PolicyTypeIngress
		c.egress = c.egress || t == networkingv1.PolicyTypeEgress
	}
	if c.ingress {
		for _, r := range np.Spec.Ingress {
			c.ingressRules = append(c.ingressRules, b.rule(np.Namespace, r.From, r.Ports))
		}
	}
	if c.egress {
		for _, r := range np.Spec.Egress {
			c.egressRules = append(c.egressRules, b.rule(np.Namespace, r.To, r.Ports))
		}
	}
	return c
}

func (b *builder) rule(ns string, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) rule {
	r := rule{allPeers: len(peers) == 0, allPorts: len(ports) == 0}
	for i := range peers {
		r.peers = append(r.peers, b.peer(ns, &peers[i]))
	}
	for _, p := range ports {
		if q, ok := compilePort(p); ok {
			r.ports = append(r.ports, q)
		}
	}
	return r
}

// peer resolves one peer, sharing equal ones.
func (b *builder) peer(ns string, p *networkingv1.NetworkPolicyPeer) *peer {
	var key string
	switch {
	case p.IPBlock != nil:
		key = "block " + p.IPBlock.CIDR
		for _, e := range slices.Sorted(slices.Values(p.IPBlock.Except)) {
			key += " except " + e
		}
	case p.PodSelector == nil && p.NamespaceSelector == nil:
		key = "invalid"
	default:
		// The namespace part: the policy's own namespace when no
		// namespaceSelector is given.
		key = "pods ns=" + ns
		if p.NamespaceSelector != nil {
			key = "pods nsSelector=" + selectorKey(p.NamespaceSelector)
		}
		key += " podSelector=" + selectorKey(p.PodSelector)
	}
	if got := b.peers[key]; got != nil {
		return got
	}
	pr := &peer{key: key, ips: map[netip.Addr]bool{}}
	b.peers[key] = pr
	switch {
	case key == "invalid":
		pr.empty = true
	case p.IPBlock != nil:
		pr.block = true
		b.block(pr, p.IPBlock)
	default:
		nsSel, podSel := labels.Everything(), selector(p.PodSelector)
		if p.NamespaceSelector != nil {
			nsSel = selector(p.NamespaceSelector)
		}
		for _, q := range b.m.pods {
			if p.NamespaceSelector == nil && q.Namespace != ns {
				continue
			}
			if !nsSel.Matches(b.nsLabels[q.Namespace]) || !podSel.Matches(labels.Set(q.Labels)) {
				continue
			}
			pr.members = append(pr.members, q)
			for _, ip := range q.IPs {
				pr.ips[ip] = true
			}
		}
	}
	return pr
}

// block fills an ipBlock peer. An unparsable CIDR, or an except covering
// the whole block, leaves it empty; excepts outside the block are
// irrelevant and dropped.
func (b *builder) block(pr *peer, ib *networkingv1.IPBlock) {
	cidr, err := netip.ParsePrefix(ib.CIDR)
	if err != nil {
		pr.empty = true
		return
	}
	cidr = unmapPrefix(cidr).Masked()
	pr.prefix = cidr
	for _, s := range ib.Except {
		e, err := netip.ParsePrefix(s)
		if err != nil {
			continue
		}
		e = unmapPrefix(e).Masked()
		switch {
		case e.Addr().Is4() != cidr.Addr().Is4():
		case e.Bits() <= cidr.Bits() && e.Contains(cidr.Addr()):
			pr.empty = true
		case cidr.Contains(e.Addr()) && !slices.Contains(pr.except, e):
			pr.except = append(pr.except, e)
		}
	}
	slices.SortFunc(pr.except, comparePrefix)
}

// containsAddr reports whether an ipBlock peer holds a.
func (pr *peer) containsAddr(a netip.Addr) bool {
	if pr.empty || !pr.prefix.Contains(a) {
		return false
	}
	for _, e := range pr.except {
		if e.Contains(a) {
			return false
		}
	}
	return true
}

// matches reports whether the peer selects address a.
func (pr *peer) matches(a netip.Addr) bool {
	if pr.block {
		return pr.containsAddr(a)
	}
	return pr.ips[a]
}

// compilePort keeps ports of the protocols we enforce (TCP, UDP, SCTP).
// endPort below port (which validation rejects) matches nothing.
func compilePort(p networkingv1.NetworkPolicyPort) (port, bool) {
	q := port{proto: corev1.ProtocolTCP}
	if p.Protocol != nil {
		q.proto = *p.Protocol
	}
	switch q.proto {
	case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
	default:
		return q, false
	}
	switch {
	case p.Port == nil:
		q.any = true
	case p.Port.Type == intstr.String:
		q.name = p.Port.StrVal
	default:
		q.lo, q.hi = int(p.Port.IntVal), int(p.Port.IntVal)
		if p.EndPort != nil {
			q.hi = int(*p.EndPort)
		}
		if q.lo < 1 || q.hi > 65535 || q.hi < q.lo {
			return q, false
		}
	}
	return q, true
}

// resolve returns the number of the pod's container port called name for
// proto, or 0.
func (p *podInfo) resolve(name string, proto corev1.Protocol) int {
	for _, cp := range p.Ports {
		pp := cp.Protocol
		if pp == "" {
			pp = corev1.ProtocolTCP
		}
		if cp.Name == name && pp == proto {
			return int(cp.ContainerPort)
		}
	}
	return 0
}

// selector converts a label selector; an invalid one selects nothing. A
// nil selector selects everything: in a peer, a missing podSelector next
// to a namespaceSelector means every pod (LabelSelectorAsSelector would
// say nothing).
func selector(ls *metav1.LabelSelector) labels.Selector {
	if ls == nil {
		return labels.Everything()
	}
	s, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return labels.Nothing()
	}
	return s
}

// selectorKey is a canonical text for a selector (sorted requirements).
func selectorKey(ls *metav1.LabelSelector) string {
	if ls == nil {
		return "{}"
	}
	s, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return "<invalid>"
	}
	return "{" + s.String() + "}"
}

func unmapPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() {
		bits := p.Bits() - 96
		if bits < 0 {
			bits = 0
		}
		return netip.PrefixFrom(p.Addr().Unmap(), bits)
	}
	return p
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// Isolation is one pod selected by some policy, for status output.
type Isolation struct {
	Pod             string   // namespace/name
	Node            string   // where it runs
	Ingress, Egress []string // policies isolating it, per direction
}

// Isolated lists the pods some policy isolates, sorted by namespace/name.
func (m *Model) Isolated() []Isolation {
	var out []Isolation
	for _, p := range m.pods {
		if len(p.ingress) == 0 && len(p.egress) == 0 {
			continue
		}
		iso := Isolation{Pod: p.key, Node: p.Node}
		for _, c := range p.ingress {
			iso.Ingress = append(iso.Ingress, c.key)
		}
		for _, c := range p.egress {
			iso.Egress = append(iso.Egress, c.key)
		}
		out = append(out, iso)
	}
	return out
}
