package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// measurement is one proxy's result in one mode.
type measurement struct {
	wrkResult
	CPU time.Duration // the proxy's CPU time during the run (all its processes)
}

// cpuPerRequest is the proxy's CPU time per request, in microseconds.
func (m measurement) cpuPerRequest() float64 {
	if m.Requests == 0 {
		return 0
	}
	return float64(m.CPU.Microseconds()) / float64(m.Requests)
}

func (m measurement) errors() int64 { return m.SocketErrors.total() + m.Non2xx3xx }

// modeResult is nodenet and nginx in one mode: each one's best round, and
// the errors of all its rounds.
type modeResult struct {
	Mode                       string
	Nodenet, Nginx             measurement
	NodenetErrors, NginxErrors int64
}

// printReport writes the comparison table. Ratios are nodenet/nginx; the
// target is a req/s ratio of at least 1 and a p99 ratio of at most 1, and
// every miss is marked.
func printReport(w io.Writer, header string, rows []modeResult) {
	fmt.Fprintln(w, header)
	fmt.Fprintf(w, "\n%-22s | %27s | %27s | %27s | %13s | %15s\n", "", "req/s", "p50 latency", "p99 latency", "errors", "CPU µs/request")
	fmt.Fprintf(w, "%-22s | %9s %9s %7s | %9s %9s %7s | %9s %9s %7s | %6s %6s | %7s %7s\n",
		"mode", "nodenet", "nginx", "ratio", "nodenet", "nginx", "ratio", "nodenet", "nginx", "ratio", "nn", "nginx", "nn", "nginx")
	fmt.Fprintln(w, strings.Repeat("-", 152))
	var misses []string
	for _, r := range rows {
		a, b := r.Nodenet, r.Nginx
		rate := ratio(a.ReqPerSec, b.ReqPerSec)
		p99 := ratio(float64(a.P99), float64(b.P99))
		rateMark, p99Mark := " ", " "
		if rate < 1 {
			rateMark = "!"
			misses = append(misses, fmt.Sprintf("%s: req/s %.3f of nginx's", r.Mode, rate))
		}
		if p99 > 1 {
			p99Mark = "!"
			misses = append(misses, fmt.Sprintf("%s: p99 %.3f× nginx's", r.Mode, p99))
		}
		if r.NodenetErrors > 0 {
			misses = append(misses, fmt.Sprintf("%s: nodenet had %d errors", r.Mode, r.NodenetErrors))
		}
		fmt.Fprintf(w, "%-22s | %9.0f %9.0f %6.2f%s | %9s %9s %7.2f | %9s %9s %6.2f%s | %6d %6d | %7.1f %7.1f\n",
			r.Mode, a.ReqPerSec, b.ReqPerSec, rate, rateMark,
			fmtLatency(a.P50), fmtLatency(b.P50), ratio(float64(a.P50), float64(b.P50)),
			fmtLatency(a.P99), fmtLatency(b.P99), p99, p99Mark,
			r.NodenetErrors, r.NginxErrors, a.cpuPerRequest(), b.cpuPerRequest())
	}
	fmt.Fprintln(w, "\nratio = nodenet / nginx; target: req/s ratio >= 1, p99 ratio <= 1 ('!' marks a miss).")
	fmt.Fprintln(w, "errors: wrk's socket errors and non-2xx/3xx answers over all rounds; the other columns are each proxy's best round.")
	if len(misses) == 0 {
		fmt.Fprintln(w, "every target met")
		return
	}
	fmt.Fprintln(w, "misses:")
	for _, m := range misses {
		fmt.Fprintln(w, "  "+m)
	}
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// fmtLatency prints a latency with 3 significant digits in µs or ms.
func fmtLatency(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}
