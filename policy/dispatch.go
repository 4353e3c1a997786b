package policy

import (
	"cmp"
	"encoding/hex"
	"net/netip"
	"slices"

	"github.com/nodenet/nodenet/datapath/iptables"
)

// The dispatch from ChainIngress/ChainEgress to the chain of a local
// isolated pod is keyed by the pod's address. A flat list would cost a
// packet up to one rule per local pod (kubelet's maxPods, 110 by
// default); instead the list is a trie over 4-bit digits of the address,
// like the proxy's: a node with more than dispatchLeafMax entries
// branches on the first digit where its addresses differ (local pod
// addresses share the node's pod CIDR, so that skips the common prefix),
// one branch per present digit, a branch of one entry inlined. 110 pods
// in a /24 cost at most about 7 + 16 rules. Branches use -g, so the pod
// chain's RETURN goes back to ChainPolicy.
const dispatchLeafMax = 8

// dispatchEntry sends packets with address ip to chain.
type dispatchEntry struct {
	ip    netip.Addr
	chain string
}

// dispatch returns the root chain (name) and its branch chains, named
// branch + the digits they cover. match is "-s" or "-d".
func dispatch(name, branch, match string, entries []dispatchEntry) []iptables.Chain {
	slices.SortFunc(entries, func(a, b dispatchEntry) int {
		return cmp.Or(a.ip.Compare(b.ip), cmp.Compare(a.chain, b.chain))
	})
	var chains []iptables.Chain
	root := iptables.Chain{Table: iptables.TableFilter, Name: name}
	root.Rules = dispatchNode(branch, match, entries, &chains)
	return append([]iptables.Chain{root}, chains...)
}

func dispatchNode(root, match string, entries []dispatchEntry, chains *[]iptables.Chain) []iptables.Rule {
	var rules []iptables.Rule
	if len(entries) <= dispatchLeafMax {
		for _, e := range entries {
			rules = append(rules, iptables.Rule(match+" "+hostPrefix(e.ip)+" -g "+e.chain))
		}
		return rules
	}
	// The first digit where the (sorted) addresses differ: the first and
	// last differ there.
	first, last := hex.EncodeToString(entries[0].ip.AsSlice()), hex.EncodeToString(entries[len(entries)-1].ip.AsSlice())
	d := 0
	for first[d] == last[d] {
		d++
	}
	for i := 0; i < len(entries); {
		j := i + 1
		digits := hex.EncodeToString(entries[i].ip.AsSlice())[:d+1]
		for j < len(entries) && hex.EncodeToString(entries[j].ip.AsSlice())[:d+1] == digits {
			j++
		}
		group := entries[i:j]
		i = j
		if len(group) == 1 {
			rules = append(rules, dispatchNode(root, match, group, chains)...)
			continue
		}
		// Hex digits, or "H" and a hash when they do not fit (hex never
		// holds "H").
		child := root + digits
		if len(child) > iptables.MaxChainName {
			child = root + "H" + hash16(digits)[:iptables.MaxChainName-len(root)-1]
		}
		prefix, _ := group[0].ip.Prefix(4 * (d + 1))
		rules = append(rules, iptables.Rule(match+" "+prefix.String()+" -g "+child))
		*chains = append(*chains, iptables.Chain{Table: iptables.TableFilter, Name: child,
			Rules: dispatchNode(root, match, group, chains)})
	}
	return rules
}
