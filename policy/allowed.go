package policy

import (
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Verdict is the answer of Allowed.
type Verdict struct {
	Allowed bool
	// IngressIsolated: some policy of type Ingress selects the destination
	// pod. EgressIsolated: some policy of type Egress selects the source.
	IngressIsolated, EgressIsolated bool
	// IngressBy and EgressBy are the policies ("namespace/name") with a
	// rule allowing the traffic, sorted; empty when not isolated.
	IngressBy, EgressBy []string
	// Reason explains the verdict in one line.
	Reason string
}

// direction is ingress or egress.
type direction int

const (
	ingress direction = iota
	egress
)

func (d direction) String() string {
	if d == ingress {
		return "ingress"
	}
	return "egress"
}

// Allowed answers "may a new connection from src reach dst on
// proto/port, and because of which policies?". src and dst are any
// addresses; those of (non-hostNetwork) pods are subject to the policies
// selecting those pods. Replies of allowed connections are not questions
// here: conntrack lets them through.
//
// The node exemption is not modelled: traffic from a node to its own pods
// is always allowed by the rules (RuleOptions.NodeIPs), but a Model does
// not know node addresses; to Allowed they are external addresses.
func (m *Model) Allowed(src, dst netip.Addr, proto corev1.Protocol, port int) Verdict {
	src, dst = src.Unmap(), dst.Unmap()
	sp, dp := m.byIP[src], m.byIP[dst]
	if sp != nil && sp == dp {
		// Loopback: a pod reaching itself never leaves its network
		// namespace, and NetworkPolicy cannot block it.
		return Verdict{Allowed: true, Reason: "loopback: " + sp.key + " reaches itself"}
	}
	var v Verdict
	var reasons []string
	egressOK, ingressOK := true, true
	if sp != nil && len(sp.egress) > 0 {
		v.EgressIsolated = true
		v.EgressBy = allowedBy(sp.egress, egress, dst, dp, proto, port)
		egressOK = len(v.EgressBy) > 0
		reasons = append(reasons, explain(egress, sp, v.EgressBy))
	}
	if dp != nil && len(dp.ingress) > 0 {
		v.IngressIsolated = true
		v.IngressBy = allowedBy(dp.ingress, ingress, src, dp, proto, port)
		ingressOK = len(v.IngressBy) > 0
		reasons = append(reasons, explain(ingress, dp, v.IngressBy))
	}
	v.Allowed = egressOK && ingressOK
	if len(reasons) == 0 {
		reasons = append(reasons, "neither end is isolated")
	}
	v.Reason = strings.Join(reasons, "; ")
	return v
}

// explain is one direction's part of Verdict.Reason.
func explain(d direction, p *podInfo, by []string) string {
	if len(by) > 0 {
		return d.String() + " of " + p.key + " allowed by " + strings.Join(by, ", ")
	}
	keys := make([]string, len(p.policies(d)))
	for i, c := range p.policies(d) {
		keys[i] = c.key
	}
	return d.String() + " of " + p.key + " isolated by " + strings.Join(keys, ", ") + "; no rule allows it"
}

func (p *podInfo) policies(d direction) []*compiled {
	if d == ingress {
		return p.ingress
	}
	return p.egress
}

func (c *compiled) rules(d direction) []rule {
	if d == ingress {
		return c.ingressRules
	}
	return c.egressRules
}

// allowedBy returns the policies among pols (sorted) with a rule of
// direction d allowing the traffic. other is the remote end (the source
// for ingress, the destination for egress); dstPod, when the destination
// is a pod, resolves named ports.
func allowedBy(pols []*compiled, d direction, other netip.Addr, dstPod *podInfo, proto corev1.Protocol, portNum int) []string {
	var by []string
	for _, c := range pols {
		for _, r := range c.rules(d) {
			if r.allows(d, other, dstPod, proto, portNum) {
				by = append(by, c.key)
				break
			}
		}
	}
	return by
}

// allows reports whether one rule admits the traffic: some peer (or any)
// holds the remote end, and some port matches for that peer.
func (r rule) allows(d direction, other netip.Addr, dstPod *podInfo, proto corev1.Protocol, portNum int) bool {
	if r.allPeers {
		return r.portMatches(d, nil, dstPod, proto, portNum)
	}
	for _, pr := range r.peers {
		if pr.matches(other) && r.portMatches(d, pr, dstPod, proto, portNum) {
			return true
		}
	}
	return false
}

// portMatches checks the rule's ports for traffic to peer pr (nil: the
// rule has no peers). A named port is resolved on the destination pod:
// the selected pod for ingress, the remote pod for egress. An egress
// ipBlock peer never resolves a named port, even for an address of a pod
// inside the block: the rules match ipBlocks with address sets and cannot
// know the port number per address.
func (r rule) portMatches(d direction, pr *peer, dstPod *podInfo, proto corev1.Protocol, portNum int) bool {
	if r.allPorts {
		return true
	}
	for _, q := range r.ports {
		if q.proto != proto {
			continue
		}
		switch {
		case q.any:
			return true
		case q.name == "":
			if q.lo <= portNum && portNum <= q.hi {
				return true
			}
		case d == egress && pr != nil && pr.block:
		case dstPod != nil && portNum != 0 && dstPod.resolve(q.name, proto) == portNum:
			return true
		}
	}
	return false
}
