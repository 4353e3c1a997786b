package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodenet/nodenet/datapath/iptables"
	"github.com/nodenet/nodenet/policy"
	"github.com/nodenet/nodenet/test/bench/internal/benchkit"
	"github.com/nodenet/nodenet/test/harness"
)

// kernelCost is the size of an agent's filter ruleset and ipsets at the
// end of its run, and what loading them into an empty namespace takes:
// the kernel + tool share of one full sync, the rest is the agent's own.
type kernelCost struct {
	rules, sets, members int
	ipsetRestore         time.Duration
	iptablesRestore      time.Duration
	err                  error
}

func (k kernelCost) String() string {
	if k.err != nil {
		return fmt.Sprintf("failed: %.300v", k.err)
	}
	return fmt.Sprintf("%d filter rules, %d ipsets with %d members; into an empty netns: ipset restore %s, iptables-restore %s",
		k.rules, k.sets, k.members, round(k.ipsetRestore), round(k.iptablesRestore))
}

// measureKernel dumps n's ipsets and filter table and times restoring
// them into a scratch namespace.
func measureKernel(ctx context.Context, n *harness.Node, scratch string) (k kernelCost) {
	sets, err := benchkit.InNS(n.NS, "ipset", "save")
	if err != nil {
		k.err = err
		return k
	}
	filter, err := benchkit.InNS(n.NS, "iptables-save", "-t", "filter")
	if err != nil {
		k.err = err
		return k
	}
	for line := range strings.SplitSeq(sets, "\n") {
		switch {
		case strings.HasPrefix(line, "create "):
			k.sets++
		case strings.HasPrefix(line, "add "):
			k.members++
		}
	}
	for line := range strings.SplitSeq(filter, "\n") {
		if strings.HasPrefix(line, "-A ") {
			k.rules++
		}
	}
	ns, err := harness.NewNS(scratch)
	if err != nil {
		k.err = err
		return k
	}
	defer ns.Delete()
	restore := func(input string, argv ...string) (time.Duration, error) {
		var d time.Duration
		err := ns.Do(func() error {
			c := exec.CommandContext(ctx, argv[0], argv[1:]...)
			c.Stdin = strings.NewReader(input)
			start := time.Now()
			out, err := c.CombinedOutput()
			d = time.Since(start)
			if err != nil {
				return fmt.Errorf("%s into scratch: %w: %.300s", argv[0], err, out)
			}
			return nil
		})
		return d, err
	}
	if k.ipsetRestore, k.err = restore(sets, "ipset", "restore"); k.err != nil {
		return k
	}
	k.iptablesRestore, k.err = restore(filter, "iptables-restore", "-w")
	return k
}

// compileCost times nodenet's own compile of the policy state (policy.Build
// and Rules for node, as its policy component does on every sync, from the
// same objects, listed here from the API) in this process: median of 3.
func compileCost(ctx context.Context, o *objects, node string) (time.Duration, error) {
	nps, err := o.client.NetworkingV1().NetworkPolicies("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, err
	}
	corePods, err := o.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, err
	}
	coreNS, err := o.client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, err
	}
	var ds []time.Duration
	for range 3 {
		start := time.Now()
		var pods []policy.Pod
		for i := range corePods.Items {
			if p, ok := policy.PodFromCore(&corePods.Items[i]); ok {
				pods = append(pods, p)
			}
		}
		var nss []policy.Namespace
		for _, ns := range coreNS.Items {
			nss = append(nss, policy.Namespace{Name: ns.Name, Labels: ns.Labels})
		}
		ptrs := make([]*networkingv1.NetworkPolicy, 0, len(nps.Items))
		for i := range nps.Items {
			ptrs = append(ptrs, &nps.Items[i])
		}
		m := policy.Build(ptrs, pods, nss)
		_ = m.Rules(policy.RuleOptions{Family: iptables.IPv4, Node: node})
		ds = append(ds, time.Since(start))
	}
	return benchkit.Percentile(ds, 0.5), nil
}

// failures are the lines of an agent's log that report an error.
func failures(p *harness.Proc, isError func(line string) bool) (int, string) {
	var lines []string
	for line := range strings.SplitSeq(p.Log(), "\n") {
		if isError(line) {
			lines = append(lines, line)
		}
	}
	first := ""
	if len(lines) > 0 {
		first = lines[0]
	}
	return len(lines), first
}
