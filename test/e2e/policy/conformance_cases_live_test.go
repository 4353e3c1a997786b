package policy

// liveCases: changes mid-case — policies updated and deleted, namespace
// and pod labels added and removed, a pod recreated with a new address.
func liveCases() []confCase {
	return []confCase{
		{"an updated policy", func(s *step) {
			s.apply(netpol("x", "a-from", spec{PodSelector: *match("pod", "a"), Ingress: []inRule{{From: []peer{pods(match("pod", "b"))}}}}))
			s.expect("x/b reaches x/a", allowAll().deny("*/*", "x/a", "*/*").allow("x/b", "x/a", "*/*"))
			s.update(netpol("x", "a-from", spec{PodSelector: *match("pod", "a"), Ingress: []inRule{{From: []peer{pods(match("pod", "c"))}}}}))
			s.expect("updated: x/c reaches x/a instead", allowAll().deny("*/*", "x/a", "*/*").allow("x/c", "x/a", "*/*"))
		}},
		{"updated policyTypes", func(s *step) {
			s.apply(netpol("x", "deny", spec{PolicyTypes: ingressType}))
			s.expect("ingress denied", allowAll().deny("*/*", "x/*", "*/*"))
			s.update(netpol("x", "deny", spec{PolicyTypes: bothTypes}))
			s.expect("ingress and egress denied", allowAll().deny("*/*", "x/*", "*/*").deny("x/*", "*/*", "*/*"))
			s.update(netpol("x", "deny", spec{PolicyTypes: egressType}))
			s.expect("egress denied only", allowAll().deny("x/*", "*/*", "*/*"))
		}},
		{"deleted policies stop being enforced", func(s *step) {
			s.apply(netpol("x", "deny-ingress", spec{PolicyTypes: ingressType}),
				netpol("x", "from-y", spec{Ingress: []inRule{{From: []peer{nss(match("ns", "y"))}}}}))
			s.expect("only y reaches x", allowAll().deny("*/*", "x/*", "*/*").allow("y/*", "x/*", "*/*"))
			s.remove("x", "from-y")
			s.expect("allow deleted: nothing reaches x", allowAll().deny("*/*", "x/*", "*/*"))
			s.remove("x", "deny-ingress")
			s.expect("deny deleted: all allowed", allowAll())
		}},
		{"namespace labels added and removed", func(s *step) {
			s.apply(netpol("x", "a-from-blue", spec{PodSelector: *match("pod", "a"), Ingress: []inRule{{From: []peer{nss(match("team", "blue"))}}}}))
			s.expect("no namespace is blue: nothing reaches x/a", allowAll().deny("*/*", "x/a", "*/*"))
			s.labelNS("y", "team", "blue")
			s.expect("y labelled blue reaches x/a", allowAll().deny("*/*", "x/a", "*/*").allow("y/*", "x/a", "*/*"))
			s.labelNS("z", "team", "blue")
			s.labelNS("y", "team", "")
			s.expect("z labelled, y unlabelled: only z reaches x/a", allowAll().deny("*/*", "x/a", "*/*").allow("z/*", "x/a", "*/*"))
		}},
		{"a namespace label on the egress side", func(s *step) {
			s.apply(netpol("x", "a-to-red", spec{PodSelector: *match("pod", "a"), PolicyTypes: egressType,
				Egress: []outRule{{To: []peer{nss(match("team", "red"))}}}}))
			s.expect("no namespace is red: x/a reaches nothing", allowAll().deny("x/a", "*/*", "*/*"))
			s.labelNS("z", "team", "red")
			s.expect("z labelled red: x/a reaches z", allowAll().deny("x/a", "*/*", "*/*").allow("x/a", "z/*", "*/*"))
		}},
		{"pod labels added and removed on a peer", func(s *step) {
			s.apply(netpol("x", "a-from-clients", spec{PodSelector: *match("pod", "a"),
				Ingress: []inRule{{From: []peer{nsPods(match(), match("role", "client"))}}}}))
			s.expect("no client: nothing reaches x/a", allowAll().deny("*/*", "x/a", "*/*"))
			s.labelPod("z/c", "role", "client")
			s.expect("z/c labelled client reaches x/a", allowAll().deny("*/*", "x/a", "*/*").allow("z/c", "x/a", "*/*"))
			s.labelPod("x/b", "role", "client")
			s.labelPod("z/c", "role", "")
			s.expect("x/b labelled, z/c unlabelled", allowAll().deny("*/*", "x/a", "*/*").allow("x/b", "x/a", "*/*"))
		}},
		{"pod labels added and removed on a target", func(s *step) {
			s.labelPod("x/b", "target", "isolated")
			s.apply(netpol("x", "isolate", spec{PodSelector: *match("target", "isolated"), PolicyTypes: ingressType}))
			s.expect("x/b isolated", allowAll().deny("*/*", "x/b", "*/*"))
			s.labelPod("x/c", "target", "isolated")
			s.expect("x/c labelled too", allowAll().deny("*/*", "x/b,x/c", "*/*"))
			s.labelPod("x/b", "target", "")
			s.expect("x/b unlabelled: x/c only", allowAll().deny("*/*", "x/c", "*/*"))
		}},
		{"a pod recreated on another node with a new address", func(s *step) {
			s.apply(netpol("x", "a-from-y-b", spec{PodSelector: *match("pod", "a"),
				Ingress: []inRule{{From: []peer{nsPods(match("ns", "y"), match("pod", "b"))}}}}),
				netpol("z", "c-to-y-b", spec{PodSelector: *match("pod", "c"), PolicyTypes: egressType,
					Egress: []outRule{{To: []peer{nsPods(match("ns", "y"), match("pod", "b"))}}}}),
				netpol("y", "b-from-x-z", spec{PodSelector: *match("pod", "b"),
					Ingress: []inRule{{From: []peer{nss(expr("ns", opIn, "x", "z"))}}}}))
			want := allowAll().
				deny("*/*", "x/a", "*/*").allow("y/b", "x/a", "*/*").
				deny("z/c", "*/*", "*/*").allow("z/c", "y/b", "*/*").
				deny("*/*", "y/b", "*/*").allow("x/*,z/*", "y/b", "*/*")
			s.expect("y/b reaches x/a, z/c reaches y/b only, only x and z reach y/b", want)
			s.recreatePod("y/b", 1-s.node[podIndex("y/b")], want)
			s.expectUnchanged("the new y/b keeps its policies", "rules naming its old address would block y/b -> x/a and z/c -> y/b", want)
		}},
	}
}
