package policy

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// portCases: numeric, named and ranged ports, protocols.
func portCases() []confCase {
	// ingressTo isolates x/a with one ingress rule of ports, from.
	ingressTo := func(name string, from []peer, ports ...nport) *networkingv1.NetworkPolicy {
		return netpol("x", name, spec{PodSelector: *match("pod", "a"), Ingress: []inRule{{From: from, Ports: ports}}})
	}
	xaOnly := func() *truth { return allowAll().deny("*/*", "x/a", "*/*") }
	return []confCase{
		{"numeric TCP port from a namespace", func(s *step) {
			s.apply(ingressTo("y-tcp-81", []peer{nss(match("ns", "y"))}, tcp(81)))
			s.expect("y reaches x/a on TCP 81 only", xaOnly().allow("y/*", "x/a", "tcp/81"))
		}},
		{"a port without protocol is TCP", func(s *step) {
			s.apply(ingressTo("port-80", nil, anyProto(80)))
			s.expect("all reach x/a on TCP 80, not UDP 80", xaOnly().allow("*/*", "x/a", "tcp/80"))
		}},
		{"a UDP rule does not open TCP", func(s *step) {
			s.apply(ingressTo("udp-81", nil, udp(81)))
			s.expect("all reach x/a on UDP 81 only", xaOnly().allow("*/*", "x/a", "udp/81"))
		}},
		{"a protocol without port opens all its ports", func(s *step) {
			s.apply(ingressTo("udp-all", nil, allPorts(corev1.ProtocolUDP)))
			s.expect("all reach x/a on UDP only", xaOnly().allow("*/*", "x/a", "udp/*"))
		}},
		{"endPort ranges", func(s *step) {
			s.apply(ingressTo("ranges", nil, portRange(corev1.ProtocolTCP, 81, 90), portRange(corev1.ProtocolUDP, 70, 80)))
			s.expect("TCP 81-90 and UDP 70-80 reach x/a", xaOnly().allow("*/*", "x/a", "tcp/81,udp/80"))
		}},
		{"several ports in one rule", func(s *step) {
			s.apply(ingressTo("tcp-80-udp-81", []peer{nss(match("ns", "z"))}, tcp(80), udp(81)))
			s.expect("z reaches x/a on TCP 80 and UDP 81", xaOnly().allow("z/*", "x/a", "tcp/80,udp/81"))
		}},
		{"named port", func(s *step) {
			s.apply(ingressTo("named-81", nil, named("serve-81-tcp")))
			s.expect("all reach x/a on TCP 81 only", xaOnly().allow("*/*", "x/a", "tcp/81"))
		}},
		{"named UDP port from a namespace", func(s *step) {
			s.apply(ingressTo("y-named-udp-80", []peer{nss(match("ns", "y"))}, namedUDP("serve-80-udp")))
			s.expect("y reaches x/a on UDP 80 only", xaOnly().allow("y/*", "x/a", "udp/80"))
		}},
		{"a named port of another protocol matches nothing", func(s *step) {
			s.apply(ingressTo("udp-named-tcp", nil, namedUDP("serve-80-tcp")))
			s.expect("nothing reaches x/a", xaOnly())
		}},
		{"a named port is resolved on each destination pod", func(s *step) {
			s.apply(netpol("x", "web", spec{Ingress: []inRule{{Ports: []nport{named("web")}}}}))
			s.expect("x/a on TCP 80, x/b on TCP 81, x/c not at all", allowAll().
				deny("*/*", "x/*", "*/*").allow("*/*", "x/a", "tcp/80").allow("*/*", "x/b", "tcp/81"))
		}},
		{"egress named port", func(s *step) {
			s.apply(netpol("x", "a-to-udp-81", spec{PodSelector: *match("pod", "a"), PolicyTypes: egressType,
				Egress: []outRule{{Ports: []nport{namedUDP("serve-81-udp")}}}}))
			s.expect("x/a reaches UDP 81 only", allowAll().deny("x/a", "*/*", "*/*").allow("x/a", "*/*", "udp/81"))
		}},
		{"an egress named port is resolved on each destination pod", func(s *step) {
			s.apply(netpol("x", "a-to-web", spec{PodSelector: *match("pod", "a"), PolicyTypes: egressType,
				Egress: []outRule{{Ports: []nport{named("web")}}}}))
			s.expect("x/a reaches pods a on TCP 80, pods b on TCP 81, pods c not at all", allowAll().
				deny("x/a", "*/*", "*/*").allow("x/a", "*/a", "tcp/80").allow("x/a", "*/b", "tcp/81"))
		}},
		{"egress named port to a namespace", func(s *step) {
			s.apply(netpol("x", "to-z-80", spec{PolicyTypes: egressType,
				Egress: []outRule{{To: []peer{nss(match("ns", "z"))}, Ports: []nport{named("serve-80-tcp")}}}}))
			s.expect("x reaches z on TCP 80 only", allowAll().deny("x/*", "*/*", "*/*").allow("x/*", "z/*", "tcp/80"))
		}},
	}
}
