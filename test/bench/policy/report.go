package main

import (
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/nodenet/nodenet/test/bench/internal/benchkit"
)

// report holds each agent's run, in agent order (nodenet first).
type report struct {
	opts    options
	agents  []*agent
	results []result
}

// row prints one value per agent and, with two agents, the ratio
// nodenet / peer.
func (rep *report) row(w io.Writer, label, format string, get func(result) float64) {
	fmt.Fprintf(w, "%-34s", label)
	var vals []float64
	for _, r := range rep.results {
		v := get(r)
		vals = append(vals, v)
		fmt.Fprintf(w, " %-24s", fmt.Sprintf(format, v))
	}
	if len(vals) == 2 && vals[1] != 0 {
		fmt.Fprintf(w, " %.2f", vals[0]/vals[1])
	}
	fmt.Fprintln(w)
}

func (rep *report) header(w io.Writer, title string) {
	fmt.Fprintf(w, "\n%s\n%-34s", title, "")
	for _, a := range rep.agents {
		fmt.Fprintf(w, " %-24s", a.name)
	}
	if len(rep.agents) == 2 {
		fmt.Fprint(w, " ratio nodenet/peer")
	}
	fmt.Fprintln(w)
}

func all(r result) []time.Duration { return append(append([]time.Duration{}, r.deny...), r.allow...) }

func (rep *report) print(w io.Writer) {
	o := rep.opts
	fmt.Fprintf(w, "\nNetworkPolicy benchmark: %d cores; %d pods (%d on the agent's node, the rest Pod objects with IPs on a node that does not exist),\n",
		runtime.NumCPU(), o.pods, o.local+4)
	fmt.Fprintf(w, "%d namespaces, %d NetworkPolicies (ingress from pod/namespace selectors on named and numbered ports; a quarter also egress with an ipBlock)\n",
		nsCount+1, o.policies)
	fmt.Fprintln(w, "agents: one at a time, each on a fresh node namespace; nodenet with the harness config (reconcile.min_interval 50ms, log level debug:")
	fmt.Fprintln(w, "        a line per sync), its own CNI; kube-router v2.1.0, only its network policy controller, with its defaults and --v 1 (a line")
	fmt.Fprintln(w, "        per sync), pods on bridge + host-local")

	rep.header(w, fmt.Sprintf("(1) new TCP connections/s, client pod -> target pod on the node (%d workers, %s each, connect + RST)", o.connWorkers, o.connDuration))
	rep.row(w, "no policy", "%.0f/s", func(r result) float64 { return r.cps0 })
	rep.row(w, fmt.Sprintf("%d policies (target isolated)", o.policies), "%.0f/s", func(r result) float64 { return r.cps1000 })
	rep.row(w, fmt.Sprintf("%d policies / none", o.policies), "%.2f", func(r result) float64 { return r.cps1000 / r.cps0 })
	rep.row(w, "failed connects (both runs)", "%.0f", func(r result) float64 { return float64(r.connErrs) })

	rep.header(w, fmt.Sprintf("(2) policy create returned -> a probe connection between two pods of the node observes it (a connect every %s), ms", probeEvery))
	for _, q := range []struct {
		label string
		get   func(result) []time.Duration
	}{
		{fmt.Sprintf("deny (%d)", o.rounds), func(r result) []time.Duration { return r.deny }},
		{fmt.Sprintf("allow (%d)", o.rounds), func(r result) []time.Duration { return r.allow }},
		{"all", all},
	} {
		for _, p := range []float64{0.5, 0.99, 1} {
			label := fmt.Sprintf("%s p%.0f", q.label, p*100)
			if p == 1 {
				label = q.label + " max"
			}
			rep.row(w, label, "%.1fms", func(r result) float64 { return ms(benchkit.Percentile(q.get(r), p)) })
		}
	}
	rep.row(w, fmt.Sprintf("not enforced within %s", flipLimit), "%.0f", func(r result) float64 { return float64(r.lost) })
	rep.row(w, fmt.Sprintf("creating %d policies (API)", o.policies), "%.2fs", func(r result) float64 { return r.bulkCreate.Seconds() })
	rep.row(w, "then one more -> enforced", "%.2fs", func(r result) float64 { return r.bulk.Seconds() })

	rep.header(w, "(3) the agent process over its whole run")
	rep.row(w, "start -> enforcing (no policy)", "%.2fs", func(r result) float64 { return r.ready.Seconds() })
	rep.row(w, "CPU s, own", "%.2fs", func(r result) float64 { return r.stats.CPUSelf })
	rep.row(w, "CPU s, +children", "%.2fs", func(r result) float64 { return r.stats.CPUSelf + r.stats.CPUChildren })
	rep.row(w, "peak RSS", "%.0f MiB", func(r result) float64 { return float64(r.stats.PeakRSS) / (1 << 20) })
	fmt.Fprintf(w, "%-34s", "load average at the end")
	for _, r := range rep.results {
		fmt.Fprintf(w, " %-24s", r.load)
	}
	fmt.Fprintln(w, "\n  (own = utime+stime of the agent; +children adds its waited-for iptables-restore / ipset runs; RSS = VmHWM)")

	fmt.Fprintln(w, "\nwhere the time goes (the agents' own metrics at the end of the run)")
	for i, r := range rep.results {
		name := rep.agents[i].name
		fmt.Fprintf(w, "  %-12s %s\n", name, r.diag)
		fmt.Fprintf(w, "  %-12s kernel state: %s\n", "", r.kernel)
		fmt.Fprintf(w, "  %-12s %d log lines reporting errors or warnings", "", r.errLines)
		if r.firstErr != "" {
			fmt.Fprintf(w, ", the first: %.240s", r.firstErr)
		}
		fmt.Fprintln(w)
		if r.compile > 0 {
			fmt.Fprintf(w, "  %-12s its compile alone (policy.Build + Rules on the same objects, in the benchmark process, median of 3): %s\n", "", round(r.compile))
		}
	}
	rep.targets(w)
}

func verdict(ok bool) string {
	if ok {
		return "MET   "
	}
	return "MISSED"
}

// targets are the issue's, each with its numbers.
func (rep *report) targets(w io.Writer) {
	if len(rep.results) == 0 || rep.agents[0].name != "nodenet" {
		return
	}
	nn := rep.results[0]
	p99 := benchkit.Percentile(all(nn), 0.99)
	fmt.Fprintln(w, "\ntargets")
	fmt.Fprintf(w, "  enforcement p99 < 1s:                 %s nodenet p99 %.1fms (%d not enforced within %s)\n",
		verdict(p99 < time.Second && nn.lost == 0), ms(p99), nn.lost, flipLimit)
	fmt.Fprintf(w, "  conns/s with %d policies >= 0.9 x none: %s nodenet %.0f/s vs %.0f/s (%.2f)\n",
		rep.opts.policies, verdict(nn.cps1000 >= 0.9*nn.cps0), nn.cps1000, nn.cps0, nn.cps1000/nn.cps0)
	if len(rep.results) < 2 {
		return
	}
	pe := rep.results[1]
	pp99 := benchkit.Percentile(all(pe), 0.99)
	fmt.Fprintf(w, "  enforcement p99 ahead of the peer:    %s nodenet %.1fms, kube-router %.1fms\n", verdict(p99 < pp99), ms(p99), ms(pp99))
	fmt.Fprintf(w, "  conns/s with policies ahead of peer:  %s nodenet %.0f/s, kube-router %.0f/s\n", verdict(nn.cps1000 > pe.cps1000), nn.cps1000, pe.cps1000)
}
