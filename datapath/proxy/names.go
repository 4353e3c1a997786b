package proxy

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"slices"
	"strconv"
)

// Owner is the iptables.Manager owner of the proxy's chains.
const Owner = "proxy"

// Fixed chains. The hooked ones are in iptables' fixed hook list.
const (
	// ChainServices (nat) is hooked from PREROUTING and OUTPUT: the root of
	// the destination dispatch tree, then the node-port dispatch.
	ChainServices = "NODENET-SERVICES"
	// ChainNodePorts (nat) dispatches node ports by protocol and port.
	ChainNodePorts = "NODENET-NODEPORTS"
	// ChainMark (nat) marks a packet for masquerade.
	ChainMark = "NODENET-PROXY-MARK"
	// ChainMarkNonPod (nat) marks packets whose source is outside the
	// cluster CIDRs; used when there are several of them.
	ChainMarkNonPod = "NODENET-PROXY-MNP"
	// ChainPost (nat) is hooked from POSTROUTING: masquerades marked packets.
	ChainPost = "NODENET-PROXY-POST"
	// ChainFilter (filter) is hooked from INPUT, FORWARD and OUTPUT: REJECT
	// or DROP for service traffic that nat did not DNAT.
	ChainFilter = "NODENET-PROXY-FILTER"
	// ChainFilterNodePorts (filter) is the node-port dispatch of ChainFilter.
	ChainFilterNodePorts = "NODENET-PROXY-NODEPORTS"
)

// Per-object chain prefixes.
const (
	prefixSVC  = "NODENET-SVC-" // nat: cluster-wide endpoint selection of a service port
	prefixSVL  = "NODENET-SVL-" // nat: node-local endpoint selection
	prefixEXT  = "NODENET-EXT-" // nat: traffic to node ports, external and LB IPs
	prefixFW   = "NODENET-FW-"  // nat: loadBalancerSourceRanges of a service port
	prefixSEP  = "NODENET-SEP-" // nat: one endpoint; earlier versions only, removed by the first full sync
	prefixSD   = "NODENET-SD-"  // nat: destination dispatch tree node
	prefixNP   = "NODENET-NP-"  // nat: node-port dispatch tree node
	prefixFD   = "NODENET-FD-"  // filter: destination dispatch tree node
	prefixFNP  = "NODENET-FNP-" // filter: node-port dispatch tree node
	prefixPrxy = "NODENET-PROXY-"
)

// Prefixes returns the chain-name prefixes the proxy Owner must Register,
// so that a full sync removes chains an earlier process left.
func Prefixes() []string {
	return []string{ChainServices, ChainNodePorts, prefixPrxy, prefixSVC, prefixSVL, prefixEXT, prefixFW,
		prefixSEP, prefixSD, prefixNP, prefixFD, prefixFNP}
}

// hash16 is 16 base32 characters (80 bits) of sha256(s): names of 28
// characters at most with the longest prefix, and no collision in
// practice.
func hash16(s string) string {
	sum := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(sum[:])[:16]
}

// portKey identifies a service port: namespace/name:port/protocol.
func (sp *ServicePort) portKey() string {
	return sp.Namespace + "/" + sp.Name + ":" + sp.PortName + "/" + sp.Protocol.lower()
}

func (sp *ServicePort) chainSVC() string { return prefixSVC + hash16(sp.portKey()) }
func (sp *ServicePort) chainSVL() string { return prefixSVL + hash16(sp.portKey()) }
func (sp *ServicePort) chainEXT() string { return prefixEXT + hash16(sp.portKey()) }
func (sp *ServicePort) chainFW() string  { return prefixFW + hash16(sp.portKey()) }

// affinityList names the -m recent list of the clients that chose e. It
// is the name of the endpoint chain earlier versions had, so an upgrade
// keeps the affinity of established clients.
func (sp *ServicePort) affinityList(e Endpoint) string {
	return prefixSEP + hash16(sp.portKey()+"/"+hostPort(e))
}

// treeName names the dispatch-tree node covering the first digits of key:
// those bits in hex (the last hex digit masked, and an "x" after it, when
// they end inside it) when they fit, else "H" and a hash (hex never
// contains "H" or "x").
func treeName(prefix string, key []byte, digits int) string {
	bits := digits * digitBits
	b := slices.Clone(key[:(bits+7)/8])
	if r := bits % 8; r != 0 {
		b[len(b)-1] &= 0xff << (8 - r)
	}
	h := hex.EncodeToString(b)[:(bits+3)/4]
	if bits%4 != 0 {
		h += "x"
	}
	if len(prefix)+len(h) > 28 {
		return prefix + "H" + hash16(h)[:27-len(prefix)]
	}
	return prefix + h
}

// portTreeName names a node-port tree node by protocol and port range.
func portTreeName(prefix string, proto Protocol, lo, hi int) string {
	return prefix + proto.lower()[:1] + strconv.Itoa(lo) + "-" + strconv.Itoa(hi)
}
