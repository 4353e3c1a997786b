package main

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"time"

	"github.com/nodenet/nodenet/test/bench/internal/benchkit"
	"github.com/nodenet/nodenet/test/harness"
)

// restoreCost times iptables-restore of the node's nat table (as
// iptables-save prints it) into an empty scratch namespace: the kernel +
// iptables-restore share of a full sync, the rest is the agent's own.
func (b *bench) restoreCost(ctx context.Context, n *harness.Node) (time.Duration, error) {
	dump, err := benchkit.InNS(n.NS, "iptables-save", "-t", "nat")
	if err != nil {
		return 0, err
	}
	b.scratch++
	ns, err := harness.NewNS(fmt.Sprintf("%sscratch%d", harness.Prefix, b.scratch))
	if err != nil {
		return 0, err
	}
	defer ns.Delete()
	var d time.Duration
	err = ns.Do(func() error {
		c := exec.CommandContext(ctx, "iptables-restore", "-w")
		c.Stdin = strings.NewReader(dump)
		start := time.Now()
		out, err := c.CombinedOutput()
		d = time.Since(start)
		if err != nil {
			return fmt.Errorf("iptables-restore into scratch: %w: %s", err, out)
		}
		return nil
	})
	return d, err
}

// restoreOneChain times `iptables-restore --noflush` rewriting one of the
// agent's chains with its own content (the endpoint chain the latency
// phase wrote last), with the whole ruleset in place: the floor of any
// partial sync that goes through iptables-restore. Median of 3.
func restoreOneChain(ctx context.Context, a *agent, n *harness.Node, svc string, ep netip.Addr) (time.Duration, error) {
	rules, err := benchkit.InNS(n.NS, a.endpointQuery(svc, ep)...)
	if err != nil {
		return 0, err
	}
	var payload strings.Builder
	payload.WriteString("*nat\n")
	for line := range strings.SplitSeq(strings.TrimSpace(rules), "\n") {
		if name, ok := strings.CutPrefix(line, "-N "); ok {
			fmt.Fprintf(&payload, ":%s - [0:0]\n", name)
		} else {
			payload.WriteString(line + "\n")
		}
	}
	payload.WriteString("COMMIT\n")
	var ds []time.Duration
	for range 3 {
		err := n.NS.Do(func() error {
			c := exec.CommandContext(ctx, "iptables-restore", "-w", "--noflush")
			c.Stdin = strings.NewReader(payload.String())
			start := time.Now()
			out, err := c.CombinedOutput()
			ds = append(ds, time.Since(start))
			if err != nil {
				return fmt.Errorf("iptables-restore --noflush of one chain: %w: %s", err, out)
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	return benchkit.Percentile(ds, 0.5), nil
}
