package policy

import (
	"crypto/sha256"
	"encoding/base32"
	"strings"
)

// Owner is the iptables.Manager owner of the policy chains.
const Owner = "policy"

// Fixed chains (filter table).
const (
	// ChainPolicy is the entry point, to be hooked from filter FORWARD and
	// INPUT (see README.md): conntrack, node exemption, dispatch.
	ChainPolicy = "NODENET-POLICY"
	// ChainEgress dispatches by source address to the egress chain of a
	// local egress-isolated pod.
	ChainEgress = "NODENET-POLICY-EGRESS"
	// ChainIngress dispatches by destination address to the ingress chain
	// of a local ingress-isolated pod.
	ChainIngress = "NODENET-POLICY-INGRESS"
)

// Per-pod chain prefixes and the ipset prefix.
const (
	prefixPI = "NODENET-PI-" // ingress chain of one pod
	prefixPE = "NODENET-PE-" // egress chain of one pod
	// Dispatch tree branches (under the ChainPolicy prefix), followed by
	// hex digits or "H" and a hash.
	branchIngress = "NODENET-POLICY-I"
	branchEgress  = "NODENET-POLICY-E"
	// SetPrefix starts every ipset the policy owner creates.
	SetPrefix = "NODENET-PS-"
	// MaxSetName is ipset's limit: IPSET_MAXNAMELEN is 32 bytes including
	// the terminating NUL.
	MaxSetName = 31
)

// Prefixes returns the chain-name prefixes the Owner must Register
// (ChainPolicy covers ChainEgress and ChainIngress).
func Prefixes() []string { return []string{ChainPolicy, prefixPI, prefixPE} }

// hash16 is 16 base32 characters (80 bits) of sha256(s): stable across
// restarts, no collision in practice.
func hash16(s string) string {
	sum := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(sum[:])[:16]
}

func podChain(d direction, podKey string) string {
	if d == ingress {
		return prefixPI + hash16(podKey)
	}
	return prefixPE + hash16(podKey)
}

// setName names a set by its key and family digit ("4" or "6"): ipsets
// are one namespace for both families. At most 29 characters.
func setName(key, fam string) string { return SetPrefix + hash16(key) + "-" + fam }

// Fixed sets, per family.
func nodeSet(fam string) string        { return SetPrefix + "NODE-" + fam }
func ingressSet(fam string) string     { return SetPrefix + "INGRESS-" + fam }
func egressSet(fam string) string      { return SetPrefix + "EGRESS-" + fam }
func truncate(s string, n int) string  { return s[:min(len(s), n)] }
func quote(s string) string            { return `"` + s + `"` }
func joinComment(keys []string) string { return quote(truncate(strings.Join(keys, ","), 255)) }
func logPrefix(d direction, key string) string {
	// NFLOG prefixes hold 63 characters.
	return quote(truncate("nodenet-policy drop "+d.String()+" "+key, 63))
}
