package iptables

import (
	"slices"
	"testing"
)

func TestChooseMode(t *testing.T) {
	const (
		hint     = "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n"
		ours     = "*nat\n:NODENET-MASQ - [0:0]\nCOMMIT\n"
		ours2    = "*nat\n:NODENET-MASQ - [0:0]\n:NODENET-POSTROUTING - [0:0]\nCOMMIT\n"
		twoRules = "*filter\n-A INPUT -j ACCEPT\n-A INPUT -j DROP\nCOMMIT\n"
		oneRule  = "*filter\n-A INPUT -j ACCEPT\nCOMMIT\n"
	)
	for _, tt := range []struct {
		name, legacy, nft string
		want              Mode
	}{
		{"both empty", "", "", ModeNFT},
		{"kubelet hint in legacy", hint, twoRules, ModeLegacy},
		{"kubelet hint in both", hint, hint, ModeNFT},
		{"kubelet hint beats our chains", ours, hint, ModeNFT},
		{"our chains in legacy", ours, twoRules, ModeLegacy},
		{"our chains in nft", twoRules, ours, ModeNFT},
		{"our chains in both, more in legacy", ours2, ours, ModeLegacy},
		{"our chains in both, tie", ours, ours, ModeNFT},
		{"more rules in legacy", twoRules, oneRule, ModeLegacy},
		{"rule tie", oneRule, oneRule, ModeNFT},
		{"more rules in nft", oneRule, twoRules, ModeNFT},
	} {
		if got := chooseMode([]byte(tt.legacy), []byte(tt.nft)); got != tt.want {
			t.Errorf("%s: chooseMode = %s, want %s", tt.name, got, tt.want)
		}
	}
}

func TestExecCommands(t *testing.T) {
	r := NewExecRunner(ModeLegacy)
	if got := r.command(t.Context(), binary(IPv6, r.Mode, "restore"), r.restoreArgs(true)...).Args; !slices.Equal(got,
		[]string{"ip6tables-legacy-restore", "-w", "5", "--noflush"}) {
		t.Errorf("args = %q", got)
	}
	r = &ExecRunner{Mode: ModeNFT, Wrap: []string{"ip", "netns", "exec", "ns1"}, WaitSeconds: 2}
	if got := r.command(t.Context(), binary(IPv4, r.Mode, "save"), "-t", "nat").Args; !slices.Equal(got,
		[]string{"ip", "netns", "exec", "ns1", "iptables-nft-save", "-t", "nat"}) {
		t.Errorf("wrapped args = %q", got)
	}
	if got := r.restoreArgs(false); !slices.Equal(got, []string{"-w", "2"}) {
		t.Errorf("restore args = %q", got)
	}
	if !slices.Equal(r.Wrap, []string{"ip", "netns", "exec", "ns1"}) {
		t.Errorf("command changed Wrap: %q", r.Wrap)
	}
}
