package iptables

import (
	"net/netip"
	"slices"
)

const (
	// MasqOwner is the Manager owner of the pod masquerade chains.
	MasqOwner = "masq"
	// ChainPostrouting is hooked from nat POSTROUTING.
	ChainPostrouting = "NODENET-POSTROUTING"
	// ChainMasq holds the masquerade decision for traffic from pods.
	ChainMasq = "NODENET-MASQ"
)

// MasqPrefixes returns the chain-name prefixes to Register for MasqOwner.
func MasqPrefixes() []string { return []string{ChainPostrouting, ChainMasq} }

// MasqueradeChains returns the nat chains for pod masquerade on fam: traffic
// from the cluster CIDRs to destinations outside them is masqueraded with
// --random-fully (a fully random source port, which avoids the SNAT port
// races that make conntrack drop packets under load); pod-to-pod traffic
// (cluster CIDR to cluster CIDR, across CIDRs too) is never NATed; multicast
// is left alone. Traffic from other sources (the node itself) never enters
// NODENET-MASQ. CIDRs of the other family are ignored; with none left it
// returns nil, so a Sync removes the chains and their hook.
//
//	nat POSTROUTING -> NODENET-POSTROUTING: -s <cidr> -> NODENET-MASQ (per CIDR)
//	NODENET-MASQ: multicast RETURN, -d <cidr> RETURN (per CIDR), MASQUERADE
func MasqueradeChains(fam Family, clusterCIDRs []netip.Prefix) []Chain {
	var cidrs []netip.Prefix
	for _, p := range clusterCIDRs {
		if !p.IsValid() || p.Addr().Is4() != (fam == IPv4) || p.Addr().Is4In6() {
			continue
		}
		if p = p.Masked(); !slices.Contains(cidrs, p) {
			cidrs = append(cidrs, p)
		}
	}
	if len(cidrs) == 0 {
		return nil
	}
	multicast := "224.0.0.0/4"
	if fam == IPv6 {
		multicast = "ff00::/8"
	}
	post := Chain{Table: TableNAT, Name: ChainPostrouting}
	masq := Chain{Table: TableNAT, Name: ChainMasq, Rules: []Rule{
		Rule("-d " + multicast + ` -m comment --comment "nodenet: multicast is not NATed" -j RETURN`),
	}}
	for _, p := range cidrs {
		post.Rules = append(post.Rules, Rule("-s "+p.String()+` -m comment --comment "nodenet: from pods" -j `+ChainMasq))
		masq.Rules = append(masq.Rules, Rule("-d "+p.String()+` -m comment --comment "nodenet: pod to pod is not NATed" -j RETURN`))
	}
	masq.Rules = append(masq.Rules, Rule(`-m comment --comment "nodenet: pod to outside" -j MASQUERADE --random-fully`))
	return []Chain{post, masq}
}
