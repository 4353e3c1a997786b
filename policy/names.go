package policy

import (
	"crypto/sha256"
	"encoding/base32"
	"strings"
	"unicode/utf8"
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

// PodChains are the names of the ingress and egress chains of the pod
// "namespace/name".
func PodChains(podKey string) (ingressChain, egressChain string) {
	return podChain(ingress, podKey), podChain(egress, podKey)
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

// Denied-packet log prefixes: "nodenet-deny <direction> <ns/name>". The
// NFLOG prefix holds at most 63 bytes (64 with the NUL); a longer one ends
// in the pod key's start, then " #" and PodHash(key), so a reader can still
// resolve the pod. Keys never contain spaces or '#'.
const (
	logMagic     = "nodenet-deny"
	maxLogPrefix = 63
)

func logPrefix(d direction, key string) string {
	p := logMagic + " " + d.String() + " " + key
	if len(p) > maxLogPrefix {
		tail := " #" + hash16(key)
		p = p[:maxLogPrefix-len(tail)] + tail
	}
	return quote(p)
}

// PodHash is the 16-character hash of a pod key ("ns/name") that names its
// chains and ends a truncated log prefix.
func PodHash(key string) string { return hash16(key) }

// LogPrefix is a decoded denied-packet log prefix.
type LogPrefix struct {
	Direction string // "ingress" or "egress": the isolation that denied it
	// Pod is the isolated pod's key "ns/name", or only its start when
	// Hash is set.
	Pod string
	// Hash is PodHash of the full key when Pod was truncated, else "".
	Hash string
}

// ParseLogPrefix decodes a prefix written by the log rules (without the
// quotes); ok is false for anything else.
func ParseLogPrefix(s string) (p LogPrefix, ok bool) {
	// Anything may log to the group; names are ASCII, and what is not
	// UTF-8 must never reach a metric label (Prometheus panics on it).
	if !utf8.ValidString(s) {
		return LogPrefix{}, false
	}
	f := strings.Split(s, " ")
	if len(f) < 3 || len(f) > 4 || f[0] != logMagic || f[2] == "" {
		return LogPrefix{}, false
	}
	if f[1] != ingress.String() && f[1] != egress.String() {
		return LogPrefix{}, false
	}
	p = LogPrefix{Direction: f[1], Pod: f[2]}
	if len(f) == 4 {
		h, found := strings.CutPrefix(f[3], "#")
		if !found || len(h) != 16 {
			return LogPrefix{}, false
		}
		p.Hash = h
	}
	return p, true
}
