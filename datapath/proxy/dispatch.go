package proxy

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/nodenet/nodenet/datapath/iptables"
)

// finish adds the dispatch trees and the fixed chains.
//
//	nat PREROUTING, OUTPUT -> NODENET-SERVICES:
//	    destination tree (NODENET-SD-*) on ClusterIPs, external and LB IPs,
//	    then to local addresses (or NodeIPs) -> NODENET-NODEPORTS:
//	        per protocol, port tree (NODENET-NP-*)
//	nat POSTROUTING -> NODENET-PROXY-POST: MASQUERADE what carries the mark
//	filter INPUT, FORWARD, OUTPUT -> NODENET-PROXY-FILTER:
//	    destination tree (NODENET-FD-*), node-port tree (NODENET-FNP-*)
//	    with REJECT (no endpoints) and DROP (no local endpoints, firewall)
func (c *compiler) finish() Ruleset {
	val, mask, _ := c.o.mark() // validated by Compile
	markArg := hexMark(val) + "/" + hexMark(mask)
	nat := c.nat
	nat = append(nat,
		iptables.Chain{Table: iptables.TableNAT, Name: ChainMark, Rules: []iptables.Rule{
			iptables.Rule("-j MARK --set-xmark " + markArg),
		}},
		// The mark is cleared before MASQUERADE (XOR with the bits, which
		// the RETURN above guarantees are set), so that a packet that
		// traverses POSTROUTING again (re-encapsulated, for instance) is
		// not masqueraded twice.
		iptables.Chain{Table: iptables.TableNAT, Name: ChainPost, Rules: append(c.hairpinRules(),
			iptables.Rule("-m mark ! --mark "+markArg+" -j RETURN"),
			iptables.Rule("-j MARK --set-xmark "+hexMark(val)+"/0x0"),
			iptables.Rule(`-m comment --comment "nodenet: service traffic requiring SNAT" -j MASQUERADE --random-fully`),
		)},
	)
	if c.usesMNP {
		mnp := iptables.Chain{Table: iptables.TableNAT, Name: ChainMarkNonPod}
		for _, p := range c.cidrs {
			mnp.Rules = append(mnp.Rules, iptables.Rule("-s "+p.String()+" -j RETURN"))
		}
		mnp.Rules = append(mnp.Rules, iptables.Rule("-j "+ChainMark))
		nat = append(nat, mnp)
	}
	root, natTree := addrTree(iptables.TableNAT, prefixSD, c.v6).build(c.natDst, "-j")
	nat = append(nat, natTree...)
	if np, chains := c.nodePorts(iptables.TableNAT, ChainNodePorts, prefixNP, c.natNP); np != nil {
		root = append(root, c.toNodePorts(ChainNodePorts)...)
		nat = append(nat, *np)
		nat = append(nat, chains...)
	}
	nat = append(nat, iptables.Chain{Table: iptables.TableNAT, Name: ChainServices, Rules: root})

	froot, filter := addrTree(iptables.TableFilter, prefixFD, c.v6).build(c.filterDst, "-j")
	if np, chains := c.nodePorts(iptables.TableFilter, ChainFilterNodePorts, prefixFNP, c.filterNP); np != nil {
		froot = append(froot, c.toNodePorts(ChainFilterNodePorts)...)
		filter = append(filter, *np)
		filter = append(filter, chains...)
	}
	filter = append(filter, iptables.Chain{Table: iptables.TableFilter, Name: ChainFilter, Rules: froot})

	byName := func(a, b iptables.Chain) int { return strings.Compare(a.Name, b.Name) }
	slices.SortFunc(nat, byName)
	slices.SortFunc(filter, byName)
	return Ruleset{NAT: nat, Filter: filter}
}

// hairpinRules mark a local endpoint's connection to a service that chose
// the endpoint itself: without SNAT it would answer itself directly and
// drop the reply. Only POSTROUTING sees source and chosen endpoint
// together, and only local endpoints can be both.
func (c *compiler) hairpinRules() []iptables.Rule {
	var rules []iptables.Rule
	for _, ip := range slices.SortedFunc(maps.Keys(c.hairpin), netip.Addr.Compare) {
		h := hostPrefix(ip)
		rules = append(rules, iptables.Rule("-s "+h+" -d "+h+` -m comment --comment "nodenet: hairpin" -j `+ChainMark))
	}
	return rules
}

// nodePorts builds the node-port root chain name (nil when no entry) and
// its port trees, one per protocol. A protocol's branches use -g: a packet
// of that protocol cannot match another protocol's rules.
func (c *compiler) nodePorts(table iptables.Table, name, prefix string, byProto map[Protocol][]entry) (*iptables.Chain, []iptables.Chain) {
	if len(byProto) == 0 {
		return nil, nil
	}
	root := &iptables.Chain{Table: table, Name: name}
	var chains []iptables.Chain
	for _, proto := range slices.SortedFunc(maps.Keys(byProto), func(a, b Protocol) int { return cmp.Compare(a, b) }) {
		rules, sub := portTree(table, prefix, proto).build(byProto[proto], "-g")
		root.Rules = append(root.Rules, rules...)
		chains = append(chains, sub...)
	}
	return root, chains
}

// toNodePorts selects packets to node ports: to the configured node
// addresses, or to any local address but loopback (reaching a node port on
// 127.0.0.1 needs route_localnet, which nodenet does not set).
func (c *compiler) toNodePorts(target string) []iptables.Rule {
	const comment = ` -m comment --comment "nodenet: node ports"`
	if len(c.nodeIPs) == 0 {
		loopback := "127.0.0.0/8"
		if c.v6 {
			loopback = "::1/128"
		}
		return []iptables.Rule{iptables.Rule("! -d " + loopback + comment + " -m addrtype --dst-type LOCAL -j " + target)}
	}
	var rules []iptables.Rule
	for _, a := range c.nodeIPs {
		rules = append(rules, iptables.Rule("-d "+hostPrefix(a)+comment+" -j "+target))
	}
	return rules
}

func hexMark(v uint32) string { return "0x" + strconv.FormatUint(uint64(v), 16) }
