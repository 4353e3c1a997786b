package policy

import (
	corev1 "k8s.io/api/core/v1"
)

// egressCases: isolation for egress, both directions together, ipBlocks.
func egressCases() []confCase {
	return []confCase{
		{"default deny egress", func(s *step) {
			s.apply(netpol("x", "deny-egress", spec{PolicyTypes: egressType}))
			s.expect("namespace x reaches nothing; replies to others pass", allowAll().deny("x/*", "*/*", "*/*"))
		}},
		{"default deny all, and the node still reaches its pods", func(s *step) {
			s.apply(netpol("x", "deny-all", spec{PolicyTypes: bothTypes}))
			s.expect("x is cut off both ways", allowAll().deny("*/*", "x/*", "*/*").deny("x/*", "*/*", "*/*"))
			s.expectNodesReachPods("x/*")
		}},
		{"allow-all egress rule opens a default deny egress", func(s *step) {
			s.apply(netpol("x", "deny-egress", spec{PolicyTypes: egressType}))
			s.expect("default deny egress", allowAll().deny("x/*", "*/*", "*/*"))
			s.apply(netpol("x", "allow-egress", spec{PolicyTypes: egressType, Egress: []outRule{{}}}))
			s.expect("plus one empty egress rule: all allowed", allowAll())
		}},
		{"egress to one pod of another namespace (AND peer)", func(s *step) {
			s.apply(netpol("x", "a-to-y-a", spec{PodSelector: *match("pod", "a"), PolicyTypes: egressType,
				Egress: []outRule{{To: []peer{nsPods(match("ns", "y"), match("pod", "a"))}}}}))
			s.expect("x/a reaches y/a only", allowAll().deny("x/a", "*/*", "*/*").allow("x/a", "y/a", "*/*"))
		}},
		{"egress to a namespace on UDP only", func(s *step) {
			s.apply(netpol("x", "to-z-udp", spec{PolicyTypes: egressType,
				Egress: []outRule{{To: []peer{nss(match("ns", "z"))}, Ports: []nport{allPorts(corev1.ProtocolUDP)}}}}))
			s.expect("x reaches z on UDP only", allowAll().deny("x/*", "*/*", "*/*").allow("x/*", "z/*", "udp/*"))
		}},
		{"egress port range to a namespace", func(s *step) {
			s.apply(netpol("x", "to-y-tcp", spec{PolicyTypes: egressType,
				Egress: []outRule{{To: []peer{nss(match("ns", "y"))}, Ports: []nport{portRange(corev1.ProtocolTCP, 80, 81)}}}}))
			s.expect("x reaches y on TCP 80-81 only", allowAll().deny("x/*", "*/*", "*/*").allow("x/*", "y/*", "tcp/*"))
		}},
		{"ingress and egress in one policy", func(s *step) {
			s.apply(netpol("x", "a-both", spec{PodSelector: *match("pod", "a"), PolicyTypes: bothTypes,
				Ingress: []inRule{{From: []peer{pods(match("pod", "b"))}}},
				Egress:  []outRule{{To: []peer{nss(match("ns", "y"))}}}}))
			s.expect("x/b reaches x/a; x/a reaches y only", allowAll().
				deny("*/*", "x/a", "*/*").allow("x/b", "x/a", "*/*").
				deny("x/a", "*/*", "*/*").allow("x/a", "y/*", "*/*"))
		}},
		{"separate ingress and egress policies on one pod", func(s *step) {
			s.apply(netpol("x", "a-no-egress", spec{PodSelector: *match("pod", "a"), PolicyTypes: egressType}),
				netpol("x", "a-from-z", spec{PodSelector: *match("pod", "a"), PolicyTypes: ingressType,
					Ingress: []inRule{{From: []peer{nss(match("ns", "z"))}}}}))
			s.expect("x/a reaches nothing; z reaches x/a", allowAll().
				deny("x/a", "*/*", "*/*").deny("*/*", "x/a", "*/*").allow("z/*", "x/a", "*/*"))
		}},
		{"policyTypes Egress alone leaves ingress open", func(s *step) {
			s.apply(netpol("x", "a-to-x", spec{PodSelector: *match("pod", "a"), PolicyTypes: egressType,
				Egress: []outRule{{To: []peer{nss(match("ns", "x"))}}}}))
			s.expect("x/a reaches x only; all reach x/a", allowAll().deny("x/a", "*/*", "*/*").allow("x/a", "x/*", "*/*"))
		}},
		{"egress rules without policyTypes isolate both ways", func(s *step) {
			s.apply(netpol("x", "a-to-y", spec{PodSelector: *match("pod", "a"),
				Egress: []outRule{{To: []peer{nss(match("ns", "y"))}}}}))
			s.expect("nothing reaches x/a; x/a reaches y only", allowAll().
				deny("*/*", "x/a", "*/*").deny("x/a", "*/*", "*/*").allow("x/a", "y/*", "*/*"))
		}},
		{"the client's egress denial wins over the server's ingress allow", func(s *step) {
			s.apply(netpol("x", "a-from-y", spec{PodSelector: *match("pod", "a"),
				Ingress: []inRule{{From: []peer{nss(match("ns", "y"))}}}}),
				netpol("y", "b-no-egress", spec{PodSelector: *match("pod", "b"), PolicyTypes: egressType}))
			s.expect("y/a and y/c reach x/a; y/b reaches nothing", allowAll().
				deny("*/*", "x/a", "*/*").allow("y/a,y/c", "x/a", "*/*").deny("y/b", "*/*", "*/*"))
		}},
		{"egress to an ipBlock", func(s *step) {
			s.apply(netpol("x", "a-to-node-b", spec{PodSelector: *match("pod", "a"), PolicyTypes: egressType,
				Egress: []outRule{{To: []peer{cidr(s.podCIDR(1))}}}}))
			s.expect("x/a reaches the pods of the second node only", allowAll().
				deny("x/a", "*/*", "*/*").allow("x/a", s.podsOn(1), "*/*"))
		}},
		{"egress to an ipBlock with except", func(s *step) {
			s.apply(netpol("x", "a-to-node-b-but-y-a", spec{PodSelector: *match("pod", "a"), PolicyTypes: egressType,
				Egress: []outRule{{To: []peer{cidr(s.podCIDR(1), s.host("y/a"))}}}}))
			s.expect("x/a reaches the second node's pods but y/a", allowAll().
				deny("x/a", "*/*", "*/*").allow("x/a", s.podsOn(1), "*/*").deny("x/a", "y/a", "*/*"))
		}},
		{"an address excepted by one policy and allowed by another", func(s *step) {
			s.apply(netpol("x", "a-to-node-b-but-y-a", spec{PodSelector: *match("pod", "a"), PolicyTypes: egressType,
				Egress: []outRule{{To: []peer{cidr(s.podCIDR(1), s.host("y/a"))}}}}))
			excepted := allowAll().deny("x/a", "*/*", "*/*").allow("x/a", s.podsOn(1), "*/*").deny("x/a", "y/a", "*/*")
			s.expect("y/a excepted", excepted)
			s.apply(netpol("x", "a-to-y-a", spec{PodSelector: *match("pod", "a"), PolicyTypes: egressType,
				Egress: []outRule{{To: []peer{cidr(s.host("y/a"))}}}}))
			s.expect("y/a allowed by the second policy", excepted.clone().allow("x/a", "y/a", "*/*"))
		}},
		{"an allow-all egress policy wins over a narrower one", func(s *step) {
			s.apply(netpol("x", "a-to-y", spec{PodSelector: *match("pod", "a"), PolicyTypes: egressType,
				Egress: []outRule{{To: []peer{nss(match("ns", "y"))}}}}))
			s.expect("x/a reaches y only", allowAll().deny("x/a", "*/*", "*/*").allow("x/a", "y/*", "*/*"))
			s.apply(netpol("x", "a-to-all", spec{PodSelector: *match("pod", "a"), PolicyTypes: egressType, Egress: []outRule{{}}}))
			s.expect("plus allow-all egress: all allowed", allowAll())
		}},
	}
}
