package policy

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Short names for writing the conformance cases' policies as literals.
type (
	spec    = networkingv1.NetworkPolicySpec
	inRule  = networkingv1.NetworkPolicyIngressRule
	outRule = networkingv1.NetworkPolicyEgressRule
	peer    = networkingv1.NetworkPolicyPeer
	nport   = networkingv1.NetworkPolicyPort
)

var (
	ingressType = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	egressType  = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	bothTypes   = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
)

func netpol(namespace, name string, s spec) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}, Spec: s}
}

// match is a matchLabels selector from key, value pairs; match() selects
// everything.
func match(kv ...string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{}
	for i := 0; i+1 < len(kv); i += 2 {
		if s.MatchLabels == nil {
			s.MatchLabels = map[string]string{}
		}
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

// expr is a selector with one matchExpressions requirement.
func expr(key string, op metav1.LabelSelectorOperator, values ...string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: op, Values: values}}}
}

func pods(s *metav1.LabelSelector) peer { return peer{PodSelector: s} }
func nss(s *metav1.LabelSelector) peer  { return peer{NamespaceSelector: s} }

// nsPods is one peer with both selectors: pods matching podSel in
// namespaces matching nsSel (AND).
func nsPods(nsSel, podSel *metav1.LabelSelector) peer {
	return peer{NamespaceSelector: nsSel, PodSelector: podSel}
}

func cidr(block string, except ...string) peer {
	return peer{IPBlock: &networkingv1.IPBlock{CIDR: block, Except: except}}
}

func protoPort(proto corev1.Protocol, port intstr.IntOrString) nport {
	return nport{Protocol: &proto, Port: &port}
}

func tcp(port int32) nport { return protoPort(corev1.ProtocolTCP, intstr.FromInt32(port)) }
func udp(port int32) nport { return protoPort(corev1.ProtocolUDP, intstr.FromInt32(port)) }

// anyProto is a port without protocol: TCP by the API's default.
func anyProto(port int32) nport { p := intstr.FromInt32(port); return nport{Port: &p} }

// allPorts is a protocol without port: every port of it.
func allPorts(proto corev1.Protocol) nport { return nport{Protocol: &proto} }

// named is a named port without protocol (TCP).
func named(name string) nport { p := intstr.FromString(name); return nport{Port: &p} }

func namedUDP(name string) nport { return protoPort(corev1.ProtocolUDP, intstr.FromString(name)) }

func portRange(proto corev1.Protocol, from, to int32) nport {
	p := protoPort(proto, intstr.FromInt32(from))
	p.EndPort = &to
	return p
}
