//go:build tools

// Package tools pins the peer NetworkPolicy agent `make bench-policy`
// compares nodenet with: kube-router's network policy controller, built
// unchanged from its own command through the Go module proxy.
//
// Not kube-network-policies (v0.8.0 is served too): it diverts new
// connections to userspace with nftables' queue expression, which this
// kernel lacks (CONFIG_NFT_QUEUE is not set and nothing can load modules),
// so it cannot enforce anything here.
package tools

import _ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
