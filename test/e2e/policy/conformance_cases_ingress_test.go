package policy

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	opIn           = metav1.LabelSelectorOpIn
	opNotIn        = metav1.LabelSelectorOpNotIn
	opExists       = metav1.LabelSelectorOpExists
	opDoesNotExist = metav1.LabelSelectorOpDoesNotExist
	nameLabel      = "kubernetes.io/metadata.name" // set on every namespace by the API server
)

// ingressCases: isolation for ingress and the peer selectors.
func ingressCases() []confCase {
	return []confCase{
		{"default deny ingress", func(s *step) {
			s.apply(netpol("x", "deny-ingress", spec{PolicyTypes: ingressType}))
			s.expect("nothing reaches namespace x", allowAll().deny("*/*", "x/*", "*/*"))
		}},
		{"no policyTypes and no rules isolates ingress only", func(s *step) {
			s.apply(netpol("x", "bare", spec{PodSelector: *match("pod", "a")}))
			s.expect("nothing reaches x/a, x/a reaches all", allowAll().deny("*/*", "x/a", "*/*"))
		}},
		{"allow-all ingress rule opens a default deny", func(s *step) {
			s.apply(netpol("x", "deny-ingress", spec{PolicyTypes: ingressType}))
			s.expect("default deny", allowAll().deny("*/*", "x/*", "*/*"))
			s.apply(netpol("x", "allow-all", spec{Ingress: []inRule{{}}}))
			s.expect("plus one empty rule: all allowed", allowAll())
		}},
		{"podSelector in the policy's namespace", func(s *step) {
			s.apply(netpol("x", "a-from-b", spec{PodSelector: *match("pod", "a"),
				Ingress: []inRule{{From: []peer{pods(match("pod", "b"))}}}}))
			s.expect("only x/b reaches x/a", allowAll().deny("*/*", "x/a", "*/*").allow("x/b", "x/a", "*/*"))
		}},
		{"podSelector matchExpressions In", func(s *step) {
			s.apply(netpol("x", "a-from-bc", spec{PodSelector: *match("pod", "a"),
				Ingress: []inRule{{From: []peer{pods(expr("pod", opIn, "b", "c"))}}}}))
			s.expect("x/b and x/c reach x/a", allowAll().deny("*/*", "x/a", "*/*").allow("x/b,x/c", "x/a", "*/*"))
		}},
		{"podSelector matchExpressions NotIn", func(s *step) {
			s.apply(netpol("x", "a-not-from-b", spec{PodSelector: *match("pod", "a"),
				Ingress: []inRule{{From: []peer{pods(expr("pod", opNotIn, "b"))}}}}))
			s.expect("only x/c reaches x/a", allowAll().deny("*/*", "x/a", "*/*").allow("x/c", "x/a", "*/*"))
		}},
		{"empty podSelector peer: the policy's namespace only", func(s *step) {
			s.apply(netpol("x", "same-ns", spec{Ingress: []inRule{{From: []peer{pods(match())}}}}))
			s.expect("x reaches x, nobody else does", allowAll().deny("*/*", "x/*", "*/*").allow("x/*", "x/*", "*/*"))
		}},
		{"namespaceSelector matchLabels", func(s *step) {
			s.apply(netpol("x", "a-from-y", spec{PodSelector: *match("pod", "a"),
				Ingress: []inRule{{From: []peer{nss(match("ns", "y"))}}}}))
			s.expect("only namespace y reaches x/a", allowAll().deny("*/*", "x/a", "*/*").allow("y/*", "x/a", "*/*"))
		}},
		{"namespaceSelector matchExpressions In", func(s *step) {
			s.apply(netpol("x", "a-from-yz", spec{PodSelector: *match("pod", "a"),
				Ingress: []inRule{{From: []peer{nss(expr("ns", opIn, "y", "z"))}}}}))
			s.expect("y and z reach x/a", allowAll().deny("*/*", "x/a", "*/*").allow("y/*,z/*", "x/a", "*/*"))
		}},
		{"namespaceSelector on the default namespace name label", func(s *step) {
			s.apply(netpol("x", "b-from-z", spec{PodSelector: *match("pod", "b"),
				Ingress: []inRule{{From: []peer{nss(match(nameLabel, "z"))}}}}))
			s.expect("only z reaches x/b", allowAll().deny("*/*", "x/b", "*/*").allow("z/*", "x/b", "*/*"))
		}},
		{"namespaceSelector DoesNotExist matches no namespace", func(s *step) {
			s.apply(netpol("x", "a-from-unlabelled", spec{PodSelector: *match("pod", "a"),
				Ingress: []inRule{{From: []peer{nss(expr("ns", opDoesNotExist))}}}}))
			s.expect("nothing reaches x/a", allowAll().deny("*/*", "x/a", "*/*"))
		}},
		{"namespaceSelector Exists and podSelector NotIn in one peer", func(s *step) {
			s.apply(netpol("x", "a-from-not-a", spec{PodSelector: *match("pod", "a"),
				Ingress: []inRule{{From: []peer{nsPods(expr("ns", opExists), expr("pod", opNotIn, "a"))}}}}))
			s.expect("pods b and c of every namespace reach x/a", allowAll().deny("y/a,z/a", "x/a", "*/*"))
		}},
		{"podSelector OR namespaceSelector: two peers", func(s *step) {
			s.apply(netpol("x", "a-from-b-or-other-ns", spec{PodSelector: *match("pod", "a"),
				Ingress: []inRule{{From: []peer{nss(expr(nameLabel, opNotIn, "x")), pods(match("pod", "b"))}}}}))
			s.expect("y, z and x/b reach x/a; x/c does not", allowAll().deny("x/c", "x/a", "*/*"))
		}},
		{"podSelector AND namespaceSelector: one peer", func(s *step) {
			s.apply(netpol("x", "a-from-b-in-other-ns", spec{PodSelector: *match("pod", "a"),
				Ingress: []inRule{{From: []peer{nsPods(expr(nameLabel, opNotIn, "x"), match("pod", "b"))}}}}))
			s.expect("only y/b and z/b reach x/a", allowAll().deny("*/*", "x/a", "*/*").allow("y/b,z/b", "x/a", "*/*"))
		}},
		{"AND peer with several pods and namespaces", func(s *step) {
			s.apply(netpol("x", "a-from-bc-in-other-ns", spec{PodSelector: *match("pod", "a"),
				Ingress: []inRule{{From: []peer{nsPods(expr("ns", opNotIn, "x"), expr("pod", opIn, "b", "c"))}}}}))
			s.expect("y/b, y/c, z/b, z/c reach x/a", allowAll().deny("*/*", "x/a", "*/*").allow("y/b,y/c,z/b,z/c", "x/a", "*/*"))
		}},
		{"AND peer naming one pod of another namespace", func(s *step) {
			s.apply(netpol("x", "a-from-y-a", spec{PodSelector: *match("pod", "a"),
				Ingress: []inRule{{From: []peer{nsPods(match("ns", "y"), match("pod", "a"))}}}}))
			s.expect("only y/a reaches x/a", allowAll().deny("*/*", "x/a", "*/*").allow("y/a", "x/a", "*/*"))
		}},
		{"empty namespaceSelector allows every pod to one target", func(s *step) {
			s.apply(netpol("x", "deny-ingress", spec{PolicyTypes: ingressType}),
				netpol("x", "all-to-a", spec{PodSelector: *match("pod", "a"), Ingress: []inRule{{From: []peer{nss(match())}}}}))
			s.expect("x/b and x/c isolated, x/a open to all pods", allowAll().deny("*/*", "x/b,x/c", "*/*"))
		}},
		{"empty namespace and pod selectors in one peer", func(s *step) {
			s.apply(netpol("x", "deny-ingress", spec{PolicyTypes: ingressType}),
				netpol("x", "all-to-c", spec{PodSelector: *match("pod", "c"), Ingress: []inRule{{From: []peer{nsPods(match(), match())}}}}))
			s.expect("x/a and x/b isolated, x/c open to all pods", allowAll().deny("*/*", "x/a,x/b", "*/*"))
		}},
		{"a target selector matching no pod isolates nothing", func(s *step) {
			// Created first: once the later policy is enforced, these were
			// seen too (one watch, in order).
			s.apply(netpol("x", "nobody", spec{PodSelector: *match("pod", "d"), PolicyTypes: bothTypes}),
				netpol("x", "unlabelled", spec{PodSelector: *expr("pod", opDoesNotExist), PolicyTypes: bothTypes}),
				netpol("y", "deny-b", spec{PodSelector: *match("pod", "b")}))
			s.expect("only y/b is isolated", allowAll().deny("*/*", "y/b", "*/*"))
		}},
		{"a policy selects pods of its own namespace only", func(s *step) {
			s.apply(netpol("y", "deny-a", spec{PodSelector: *match("pod", "a"), PolicyTypes: ingressType}))
			s.expect("y/a isolated, x/a and z/a not", allowAll().deny("*/*", "y/a", "*/*"))
		}},
		{"ipBlock with except in an ingress rule", func(s *step) {
			s.apply(netpol("x", "a-from-node-b", spec{PodSelector: *match("pod", "a"),
				Ingress: []inRule{{From: []peer{cidr("0.0.0.0/0", s.podCIDR(0))}}}}))
			s.expect("pods of the second node reach x/a, those of x/a's node do not",
				allowAll().deny("*/*", "x/a", "*/*").allow(s.podsOn(1), "x/a", "*/*"))
		}},
		{"ipBlock of one pod address", func(s *step) {
			s.apply(netpol("z", "c-from-y-b", spec{PodSelector: *match("pod", "c"),
				Ingress: []inRule{{From: []peer{cidr(s.host("y/b"))}}}}))
			s.expect("only y/b reaches z/c", allowAll().deny("*/*", "z/c", "*/*").allow("y/b", "z/c", "*/*"))
		}},
		{"stacked policies with overlapping pod selectors", func(s *step) {
			s.apply(netpol("x", "ab-from-y", spec{PodSelector: *expr("pod", opIn, "a", "b"),
				Ingress: []inRule{{From: []peer{nss(match("ns", "y"))}}}}),
				netpol("x", "b-from-z-81", spec{PodSelector: *match("pod", "b"),
					Ingress: []inRule{{From: []peer{nss(match("ns", "z"))}, Ports: []nport{tcp(81)}}}}))
			s.expect("x/a from y; x/b from y, and from z on TCP 81",
				allowAll().deny("*/*", "x/a,x/b", "*/*").allow("y/*", "x/a,x/b", "*/*").allow("z/*", "x/b", "tcp/81"))
		}},
		{"policies in several namespaces at once", func(s *step) {
			s.apply(netpol("x", "a-from-y", spec{PodSelector: *match("pod", "a"),
				Ingress: []inRule{{From: []peer{nss(match("ns", "y"))}}}}),
				netpol("z", "deny-ingress", spec{PolicyTypes: ingressType}))
			s.expect("x/a from y only; nothing reaches z",
				allowAll().deny("*/*", "x/a", "*/*").allow("y/*", "x/a", "*/*").deny("*/*", "z/*", "*/*"))
		}},
		{"an allow-all ingress policy wins over a narrower one", func(s *step) {
			s.apply(netpol("x", "a-tcp-81", spec{PodSelector: *match("pod", "a"), Ingress: []inRule{{Ports: []nport{tcp(81)}}}}))
			s.expect("x/a on TCP 81 only", allowAll().deny("*/*", "x/a", "*/*").allow("*/*", "x/a", "tcp/81"))
			s.apply(netpol("x", "a-all", spec{PodSelector: *match("pod", "a"), Ingress: []inRule{{}}}))
			s.expect("plus allow-all for x/a: all allowed", allowAll())
		}},
	}
}
