package main

import (
	"fmt"
	"io"
	"math"
	"runtime"
	"strings"
	"time"

	"github.com/nodenet/nodenet/test/bench/internal/benchkit"
)

// report holds every run: cold[size][i] is agents[i]'s run at size.
type report struct {
	opts   options
	agents []*agent
	sizes  []int // connSmall, then opts.sizes
	cold   map[int][]result
}

func (rep *report) largest() int { return rep.sizes[len(rep.sizes)-1] }

// table prints rows of one value per agent plus the nodenet/kube-proxy
// iptables ratio (agents[0] / agents[1]).
type table struct {
	w     io.Writer
	title string
	cols  []string
}

func (t table) header() {
	fmt.Fprintf(t.w, "\n%s\n%-28s", t.title, "")
	for _, c := range t.cols {
		fmt.Fprintf(t.w, " %-21s", c)
	}
	fmt.Fprintf(t.w, " %s\n", "ratio nodenet/kp-iptables")
}

// row prints one value per agent; NaN is a phase that did not run (the
// agent was never programmed), lower marks values that are lower bounds.
func (t table) row(label string, vals []float64, format string, lower ...bool) {
	fmt.Fprintf(t.w, "%-28s", label)
	for i, v := range vals {
		c := fmt.Sprintf(format, v)
		switch {
		case math.IsNaN(v):
			c = "n/a (timed out)"
		case i < len(lower) && lower[i]:
			c = "> " + c + " (timed out)"
		}
		fmt.Fprintf(t.w, " %-21s", c)
	}
	ratio := "-"
	if len(vals) > 1 && vals[1] != 0 && !math.IsNaN(vals[0]) && !math.IsNaN(vals[1]) {
		ratio = fmt.Sprintf("%.2f", vals[0]/vals[1])
		if len(lower) > 1 && lower[1] && !lower[0] {
			ratio = "< " + ratio
		}
	}
	fmt.Fprintf(t.w, " %s\n", ratio)
}

// values reads one number per agent at size; NaN where the agent timed
// out and the value needs the rules (ran is false).
func (rep *report) values(size int, get func(result) float64, needsRules ...bool) []float64 {
	var out []float64
	for _, r := range rep.cold[size] {
		if r.timedOut && len(needsRules) > 0 && needsRules[0] {
			out = append(out, math.NaN())
			continue
		}
		out = append(out, get(r))
	}
	return out
}

func (rep *report) timedOut(size int) []bool {
	var out []bool
	for _, r := range rep.cold[size] {
		out = append(out, r.timedOut)
	}
	return out
}

func (rep *report) print(w io.Writer) {
	o, big := rep.opts, rep.largest()
	var cols []string
	for _, a := range rep.agents {
		cols = append(cols, a.name)
	}
	fmt.Fprintf(w, "\nService proxy benchmark: %d cores; Services without selectors, %d ready endpoints each (port %d -> %d), +1 target Service\n",
		runtime.NumCPU(), perService, servicePort, endpointPort)
	fmt.Fprintln(w, "agents: one at a time, each on a fresh node namespace; nodenet with the harness config at log level info")
	fmt.Fprintln(w, "        (reconcile.min_interval 50ms); kube-proxy with its defaults (--iptables-min-sync-period 1s)")
	fmt.Fprintln(w, "\"in the kernel\": the chain holding the endpoint's DNAT, listed inside the node namespace, DNATs to ip:8080 —")
	fmt.Fprintln(w, "  nodenet `iptables -t nat -S NODENET-SEP-<h>`, kube-proxy iptables `iptables -t nat -S KUBE-SEP-<h>`,")
	fmt.Fprintln(w, "  kube-proxy nftables `nft list chain ip kube-proxy service-<h>-<ns>/<svc>/tcp/http` (v1.37 DNATs from the")
	fmt.Fprintln(w, "  service chain through a numgen map, no per-endpoint chains). Each agent applies a sync atomically, so the")
	fmt.Fprintln(w, "  chain present means its whole sync is in. Cold start then checks the whole ruleset: the endpoints in the DNAT")
	fmt.Fprintln(w, "  statements of `iptables-save -t nat` / `nft list table ip kube-proxy` must number 10 x fillers + 1.")
	t := table{w: w, title: "(1) cold start: agent started -> last Service's endpoint chain in the kernel (10 ms polls), seconds", cols: cols}
	t.header()
	for _, size := range rep.sizes {
		t.row(fmt.Sprintf("%d services", size), rep.values(size, func(r result) float64 { return r.cold.Seconds() }), "%.2fs", rep.timedOut(size)...)
	}
	for _, size := range rep.sizes {
		for i, r := range rep.cold[size] {
			if r.coldNote != "" {
				fmt.Fprintf(w, "  note: %s at %d: %s\n", rep.agents[i].name, size, r.coldNote)
			}
		}
	}

	t = table{w: w, title: fmt.Sprintf("(2) EndpointSlice write returned -> new endpoint's chain in the kernel, %d services, %d changes (1 ms polls), ms", big, o.changes), cols: cols}
	t.header()
	lat := func(p float64) func(result) float64 {
		return func(r result) float64 { return ms(benchkit.Percentile(r.lat, p)) }
	}
	t.row("p50", rep.values(big, lat(0.5)), "%.1fms")
	t.row("p99", rep.values(big, lat(0.99)), "%.1fms")
	t.row("max", rep.values(big, lat(1)), "%.1fms")
	t.row("changes not measured", rep.values(big, func(r result) float64 { return float64(r.latLost) }, true), "%.0f")
	t.row("one poll's cost (p50)", rep.values(big, func(r result) float64 { return ms(r.queryCost) }), "%.1fms")

	t = table{w: w, title: fmt.Sprintf("(3) new TCP connections/s from the node to one ClusterIP (%d workers, %s, connect + RST)", o.connWorkers, o.connDuration), cols: cols}
	t.header()
	small := rep.values(connSmall, func(r result) float64 { return r.cps }, true)
	large := rep.values(big, func(r result) float64 { return r.cps }, true)
	t.row(fmt.Sprintf("%d services", connSmall), small, "%.0f/s")
	t.row(fmt.Sprintf("%d services", big), large, "%.0f/s")
	scale := make([]float64, len(small))
	for i := range small {
		scale[i] = large[i] / small[i]
	}
	t.row(fmt.Sprintf("%d / %d services", big, connSmall), scale, "%.2f")
	t.row("failed connects (both runs)", rep.sum(func(r result) float64 { return float64(r.connErrs) }, connSmall, big), "%.0f")

	t = table{w: w, title: "(4) the agent's CPU and peak memory, per run (start -> stop; the largest run includes (2) and (3))", cols: cols}
	t.header()
	for _, size := range rep.sizes {
		t.row(fmt.Sprintf("CPU s, own @%d", size), rep.values(size, func(r result) float64 { return r.stats.CPUSelf }), "%.2fs")
	}
	for _, size := range rep.sizes {
		t.row(fmt.Sprintf("CPU s, +children @%d", size), rep.values(size, func(r result) float64 { return r.stats.CPUSelf + r.stats.CPUChildren }), "%.2fs")
	}
	for _, size := range rep.sizes {
		t.row(fmt.Sprintf("peak RSS @%d", size), rep.values(size, func(r result) float64 { return float64(r.stats.PeakRSS) / (1 << 20) }), "%.0f MiB")
	}
	for _, size := range rep.sizes {
		fmt.Fprintf(w, "%-28s", fmt.Sprintf("load average @%d", size))
		for _, r := range rep.cold[size] {
			fmt.Fprintf(w, " %-21s", r.load)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "  (own = utime+stime of the agent process; +children adds its waited-for iptables-restore / nft runs; RSS = VmHWM;\n   load average = 1-minute /proc/loadavg at the run's end: anything else on the machine shows there)")

	rep.breakdown(w)
	rep.targets(w)
}

func (rep *report) sum(get func(result) float64, sizes ...int) []float64 {
	out := make([]float64, len(rep.agents))
	for _, s := range sizes {
		for i, r := range rep.cold[s] {
			out[i] += get(r)
		}
	}
	return out
}

// breakdown shows where sync time goes: each agent's own sync metrics and,
// for the iptables agents, what iptables-restore alone takes.
func (rep *report) breakdown(w io.Writer) {
	big := rep.largest()
	fmt.Fprintf(w, "\nwhere the time goes (agents' own sync metrics; nodenet: component=\"proxy\")\n")
	for _, size := range rep.sizes {
		for i, r := range rep.cold[size] {
			fmt.Fprintf(w, "  %-20s @%-6d at cold start: %s; whole run: %s\n", rep.agents[i].name, size, syncLine(r.coldSyncs), syncLine(r.syncs))
		}
	}
	for i, r := range rep.cold[big] {
		if r.diagErr != nil {
			fmt.Fprintf(w, "  %-20s @%-6d restore diagnostics failed (zero below): %.300v\n", rep.agents[i].name, big, r.diagErr)
		}
		if r.restoreFull > 0 || r.restoreOne > 0 {
			fmt.Fprintf(w, "  %-20s @%-6d iptables-restore of its whole nat table into an empty netns %.2fs (cold start %.2fs);\n",
				rep.agents[i].name, big, r.restoreFull.Seconds(), r.cold.Seconds())
			fmt.Fprintf(w, "  %-20s         iptables-restore --noflush of one unchanged chain, its ruleset in place: %s (partial sync mean %s)\n",
				"", round(r.restoreOne), round(r.syncs["partial"].mean()))
		}
	}
}

func syncLine(m map[string]syncSum) string {
	var parts []string
	for _, k := range []string{"full", "partial"} {
		if s, ok := m[k]; ok && s.count > 0 {
			parts = append(parts, fmt.Sprintf("%s %.0f x mean %s (total %.2fs)", k, s.count, round(s.mean()), s.seconds))
		}
	}
	if len(parts) == 0 {
		return "no syncs recorded"
	}
	return strings.Join(parts, ", ")
}

func round(d time.Duration) time.Duration {
	if d > time.Second {
		return d.Round(10 * time.Millisecond)
	}
	return d.Round(100 * time.Microsecond)
}

func verdict(ok bool) string {
	if ok {
		return "MET   "
	}
	return "MISSED"
}

// targets are the four, each with its numbers.
func (rep *report) targets(w io.Writer) {
	big := rep.largest()
	fmt.Fprintln(w, "\ntargets")
	if len(rep.agents) != 3 {
		fmt.Fprintln(w, "  judged only when all three agents run (-agents nn,ipt,nft)")
		return
	}
	secs := func(r result) string {
		if r.timedOut {
			return fmt.Sprintf("> %.2fs (timed out)", r.cold.Seconds())
		}
		return fmt.Sprintf("%.2fs", r.cold.Seconds())
	}
	for _, size := range rep.opts.sizes {
		rs := rep.cold[size]
		ratio := rs[0].cold.Seconds() / rs[1].cold.Seconds()
		// A timed-out kube-proxy took at least its time: the ratio is an upper bound.
		met := !rs[0].timedOut && ratio <= 0.5
		fmt.Fprintf(w, "  (1) cold start @%-6d <= 0.5 x kube-proxy iptables: %s nodenet %s, kube-proxy iptables %s (ratio %.2f); nftables %s\n",
			size, verdict(met), secs(rs[0]), secs(rs[1]), ratio, secs(rs[2]))
	}
	nnBig := rep.cold[big][0]
	if nnBig.timedOut || rep.cold[connSmall][0].timedOut {
		fmt.Fprintf(w, "  (2), (3) @%d: MISSED nodenet was not programmed within %s\n", big, rep.opts.syncTimeout)
	} else {
		p99 := benchkit.Percentile(nnBig.lat, 0.99)
		lost := ""
		if nnBig.latLost > 0 {
			lost = fmt.Sprintf("; %d of %d changes not programmed within %s (p50/p99 over the %d measured)",
				nnBig.latLost, rep.opts.changes, changeTimeout, len(nnBig.lat))
		}
		fmt.Fprintf(w, "  (2) change -> kernel p99 @%d < 100ms:         %s nodenet p99 %.1fms (p50 %.1fms)%s\n",
			big, verdict(p99 < 100*time.Millisecond && nnBig.latLost == 0), ms(p99), ms(benchkit.Percentile(nnBig.lat, 0.5)), lost)
		s, l := rep.cold[connSmall][0].cps, nnBig.cps
		fmt.Fprintf(w, "  (3) conns/s @%d >= 0.9 x @%d:               %s nodenet %.0f/s vs %.0f/s (%.2f)\n",
			big, connSmall, verdict(l >= 0.9*s), l, s, l/s)
	}
	for _, size := range rep.opts.sizes {
		rs := rep.cold[size]
		for _, m := range []struct {
			what string
			get  func(result) float64
			unit string
		}{
			{"CPU (own)", func(r result) float64 { return r.stats.CPUSelf }, "s"},
			{"CPU (+children)", func(r result) float64 { return r.stats.CPUSelf + r.stats.CPUChildren }, "s"},
			{"peak RSS", func(r result) float64 { return float64(r.stats.PeakRSS) / (1 << 20) }, " MiB"},
		} {
			nn, ipt, nft := m.get(rs[0]), m.get(rs[1]), m.get(rs[2])
			note := ""
			if rs[0].timedOut || rs[1].timedOut || rs[2].timedOut {
				note = "  (a timed-out run is not comparable)"
			}
			fmt.Fprintf(w, "  (4) %-15s @%-6d below kube-proxy: iptables %s, nftables %s  nodenet %.2f%s, iptables %.2f%s, nftables %.2f%s%s\n",
				m.what, size, verdict(nn < ipt), verdict(nn < nft), nn, m.unit, ipt, m.unit, nft, m.unit, note)
		}
	}
}
