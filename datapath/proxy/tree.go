package proxy

import (
	"bytes"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/nodenet/nodenet/datapath/iptables"
)

// The dispatch tree. kube-proxy's KUBE-SERVICES holds one rule per service
// port, so a new connection is matched against every Service in turn. We
// key each leaf rule by bytes (a destination address, or a port) and build
// a trie over 2-bit digits of the key: a node with more than leafMax rules
// branches on the next digit ("-d 10.96.16.0/22 -g NODENET-SD-0a6010x"),
// only non-empty branches are created, a branch holding a single rule is
// inlined, and a branch whose keys share more digits starts directly at
// their common prefix (path compression, so a /12 service CIDR costs no
// empty levels and addresses outside it simply get branches of their own).
// A packet evaluates at most 4 branch rules per 2 bits of key plus at most
// leafMax leaf rules: O(log N) with small constants. Two-bit digits halve
// the rules a packet meets per level compared with 4-bit ones (at 10,000
// Services a mean of 35 rules per new connection became about 20): a rule
// the packet is matched against costs, the extra jump does not. Branches
// below the top use -g: when the leaf does not match, the packet returns
// straight to the tree's caller instead of scanning the remaining branches
// on the way back up (they are disjoint and could not match).
const leafMax = 4

// digitBits is the size of a trie digit.
const digitBits = 2

// entry is one leaf rule, keyed by big-endian bytes.
type entry struct {
	key  []byte
	rule iptables.Rule
}

// treeSpec describes one tree.
type treeSpec struct {
	table  iptables.Table
	width  int                                 // key width in digits
	name   func(key []byte, digits int) string // chain of the node covering the key's first digits
	branch func(key []byte, digits int) string // match arguments selecting that node
}

// build returns the root rules (branches use verb, "-j" or "-g") and the
// chains below the root. The result depends only on the set of entries.
func (s treeSpec) build(entries []entry, verb string) ([]iptables.Rule, []iptables.Chain) {
	entries = slices.Clone(entries)
	slices.SortStableFunc(entries, func(a, b entry) int {
		if c := bytes.Compare(a.key, b.key); c != 0 {
			return c
		}
		return strings.Compare(string(a.rule), string(b.rule))
	})
	var chains []iptables.Chain
	rules := s.node(0, entries, verb, &chains)
	slices.SortFunc(chains, func(a, b iptables.Chain) int { return strings.Compare(a.Name, b.Name) })
	return rules, chains
}

func (s treeSpec) node(level int, entries []entry, verb string, chains *[]iptables.Chain) []iptables.Rule {
	var rules []iptables.Rule
	if len(entries) <= leafMax || level >= s.width {
		for _, e := range entries {
			rules = append(rules, e.rule)
		}
		return rules
	}
	for len(entries) > 0 {
		d := digit(entries[0].key, level)
		n := 1
		for n < len(entries) && digit(entries[n].key, level) == d {
			n++
		}
		group := entries[:n]
		entries = entries[n:]
		if len(group) == 1 {
			rules = append(rules, group[0].rule)
			continue
		}
		common := level + 1
		for common < s.width && allSameDigit(group, common) {
			common++
		}
		name := s.name(group[0].key, common)
		rules = append(rules, iptables.Rule(s.branch(group[0].key, common)+" "+verb+" "+name))
		*chains = append(*chains, iptables.Chain{Table: s.table, Name: name, Rules: s.node(common, group, "-g", chains)})
	}
	return rules
}

// digit is the i-th digitBits-bit digit of key, most significant first.
func digit(key []byte, i int) byte {
	bit := i * digitBits
	return key[bit/8] >> (8 - digitBits - bit%8) & (1<<digitBits - 1)
}

func allSameDigit(es []entry, i int) bool {
	d := digit(es[0].key, i)
	for _, e := range es[1:] {
		if digit(e.key, i) != d {
			return false
		}
	}
	return true
}

// addrTree dispatches on destination addresses; chains are named
// prefix+hex digits of the address prefix.
func addrTree(table iptables.Table, prefix string, v6 bool) treeSpec {
	width := 32 / digitBits
	if v6 {
		width = 128 / digitBits
	}
	return treeSpec{
		table: table, width: width,
		name: func(key []byte, n int) string { return treeName(prefix, key, n) },
		branch: func(key []byte, n int) string {
			a, _ := netip.AddrFromSlice(key)
			return "-d " + netip.PrefixFrom(a, digitBits*n).Masked().String()
		},
	}
}

// portTree dispatches on the destination port of one protocol; chains are
// named prefix+protocol initial+port range.
func portTree(table iptables.Table, prefix string, proto Protocol) treeSpec {
	return treeSpec{
		table: table, width: 16 / digitBits,
		name: func(key []byte, n int) string {
			lo, hi := portRange(key, n)
			return portTreeName(prefix, proto, lo, hi)
		},
		branch: func(key []byte, n int) string {
			lo, hi := portRange(key, n)
			r := strconv.Itoa(lo)
			if hi != lo {
				r += ":" + strconv.Itoa(hi)
			}
			p := proto.lower()
			return "-p " + p + " -m " + p + " --dport " + r
		},
	}
}

func portRange(key []byte, digits int) (lo, hi int) {
	v := int(key[0])<<8 | int(key[1])
	span := 1<<(16-digitBits*digits) - 1
	return v &^ span, v | span
}

func portKey(port int) []byte { return []byte{byte(port >> 8), byte(port)} }
