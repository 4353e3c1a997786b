// Command cni is `make bench-cni`: it measures CNI ADD and DEL latency and
// throughput of nodenet against the reference plugins (bridge + host-local,
// containernetworking/plugins) on the test cluster, both executed the same
// way: the plugin binary run inside a node namespace with the CNI
// environment, one fresh network namespace per pod. Rounds alternate which
// implementation goes first so machine noise hits both alike; the table shows
// the median of the rounds. Everything is removed at the end, also on Ctrl-C.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/nodenet/nodenet/test/bench/internal/benchkit"
	"github.com/nodenet/nodenet/test/harness"
)

var stderr = os.Stderr // progress lines; the report goes to stdout

// options are the command line flags.
type options struct {
	pods     int           // pods per batch
	rounds   int           // rounds per implementation
	workers  int           // concurrent invocations in the parallel phase
	warmup   int           // untimed ADD/DEL pairs per implementation
	settle   time.Duration // pause before each timed batch
	floorRun int           // invocations timed for the exec floor
}

func main() {
	var o options
	flag.IntVar(&o.pods, "n", 200, "pods per batch")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds per implementation (the table shows their median)")
	flag.IntVar(&o.workers, "workers", 8, "concurrent invocations in the parallel phase")
	flag.IntVar(&o.warmup, "warmup", 10, "untimed ADD/DEL pairs per implementation before measuring")
	flag.DurationVar(&o.settle, "settle", time.Second, "pause after creating a batch's namespaces, before timing it")
	flag.IntVar(&o.floorRun, "floor", 50, "invocations timed for the exec floor")
	flag.Parse()
	benchkit.RequireRoot("bench-cni", "it creates network namespaces and runs nodenet in them")
	if o.pods < 1 || o.rounds < 1 || o.workers < 1 || o.warmup < 0 || o.floorRun < 1 {
		fmt.Fprintln(os.Stderr, "bench-cni: -n, -rounds, -workers and -floor must be at least 1, -warmup at least 0")
		os.Exit(2)
	}
	benchkit.Main("bench-cni", func(ctx context.Context) error { return run(ctx, o) })
}

func run(ctx context.Context, o options) (err error) {
	c, err := benchkit.StartCluster(ctx, "bin-", "starting the control plane and two nodes ...")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, c.Stop()) }()
	cp := c.CP
	nn, err := startNodenet(ctx, cp, c.Nodenet)
	if err != nil {
		return err
	}
	ref, err := setupReference(ctx, cp)
	if err != nil {
		return err
	}
	pool := &podPool{}
	defer func() { err = errors.Join(err, pool.deleteAll()) }()
	b := &bench{opts: o, pool: pool, nodenet: nn, ref: ref}
	rep, err := b.run(ctx)
	if err != nil {
		return err
	}
	rep.print(os.Stdout, o)
	return nil
}

// startNodenet adds the node nodenet runs on, logging at info so logging
// does not weigh on the timing.
func startNodenet(ctx context.Context, cp *harness.ControlPlane, bin string) (*impl, error) {
	n, err := cp.AddNode(ctx, "bench-nn")
	if err != nil {
		return nil, err
	}
	cfg := strings.Replace(n.DefaultConfig(""), `level = "debug"`, `level = "info"`, 1)
	if err := n.WriteConfig(cfg); err != nil {
		return nil, err
	}
	if err := n.Start(bin); err != nil {
		return nil, err
	}
	if err := n.WaitReady(ctx, 2*time.Minute); err != nil {
		return nil, err
	}
	conf, err := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "nodenet", "type": "nodenet", "socket": n.Socket})
	if err != nil {
		return nil, err
	}
	return newImpl("nodenet", n, filepath.Join(n.CNIBinDir, "nodenet"), conf)
}

// setupReference adds a second node without nodenet: its CNI bin dir holds
// the reference plugins, configured like a typical bridge network on the
// node's podCIDR.
func setupReference(ctx context.Context, cp *harness.ControlPlane) (*impl, error) {
	n, err := cp.AddNode(ctx, "bench-ref")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(n.CNIBinDir, 0o755); err != nil {
		return nil, err
	}
	for _, p := range []string{"bridge", "host-local"} {
		if err := os.Symlink(filepath.Join(cp.Bin, p), filepath.Join(n.CNIBinDir, p)); err != nil {
			return nil, fmt.Errorf("install reference plugin: %w", err)
		}
	}
	conf, err := json.Marshal(map[string]any{
		"cniVersion": "1.0.0", "name": "bench-ref", "type": "bridge",
		"bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true, "mtu": 1500,
		"ipam": map[string]any{
			"type":    "host-local",
			"ranges":  [][]map[string]string{{{"subnet": n.PodCIDR}}},
			"dataDir": filepath.Join(n.Dir, "host-local"), // removed with the node
		},
	})
	if err != nil {
		return nil, err
	}
	return newImpl("bridge+host-local", n, filepath.Join(n.CNIBinDir, "bridge"), conf)
}

func newImpl(name string, n *harness.Node, plugin string, conf []byte) (*impl, error) {
	cidr, err := netip.ParsePrefix(n.PodCIDR)
	if err != nil {
		return nil, fmt.Errorf("%s podCIDR: %w", n.Name, err)
	}
	return &impl{name: name, node: n, plugin: plugin, conf: conf, cidr: cidr}, nil
}

// metricRows are the table's lines: a name, a unit and how to read the
// value from one round.
var metricRows = []struct {
	name string
	unit string // "ms" or "/s"
	get  func(roundResult) float64
}{
	{"ADD p50", "ms", func(r roundResult) float64 { return ms(r.addP50) }},
	{"ADD p99", "ms", func(r roundResult) float64 { return ms(r.addP99) }},
	{"DEL p50", "ms", func(r roundResult) float64 { return ms(r.delP50) }},
	{"DEL p99", "ms", func(r roundResult) float64 { return ms(r.delP99) }},
	{"ADD seq throughput", "/s", func(r roundResult) float64 { return r.addSeqTput }},
	{"ADD parallel throughput", "/s", func(r roundResult) float64 { return r.addParTput }},
	{"DEL parallel throughput", "/s", func(r roundResult) float64 { return r.delParTput }},
}

func cell(v float64, unit string) string {
	if unit == "ms" {
		return fmt.Sprintf("%.2fms", v)
	}
	return fmt.Sprintf("%.0f /s", v)
}

// print writes the table and the breakdown of where the time goes.
func (rep *report) print(w io.Writer, o options) {
	fmt.Fprintf(w, "\nCNI benchmark: %d pods, %d rounds (median), %d cores, %d parallel workers\n",
		o.pods, o.rounds, runtime.NumCPU(), o.workers)
	fmt.Fprintf(w, "%-26s %-13s %-19s %s\n", "metric", "nodenet", "bridge+host-local", "ratio (nodenet/ref)")
	medianOf := func(rs []roundResult, get func(roundResult) float64) float64 {
		vs := make([]float64, len(rs))
		for i, r := range rs {
			vs[i] = get(r)
		}
		return median(vs)
	}
	var addRatio float64
	for i, m := range metricRows {
		nn, ref := medianOf(rep.nodenet, m.get), medianOf(rep.ref, m.get)
		fmt.Fprintf(w, "%-26s %-13s %-19s %.2f\n", m.name, cell(nn, m.unit), cell(ref, m.unit), nn/ref)
		if i == 0 {
			addRatio = nn / ref
		}
	}
	verdict := "MET"
	if addRatio > 0.5 {
		verdict = "MISSED"
	}
	fmt.Fprintf(w, "target: nodenet ADD p50 <= 0.5 x reference: %s (%.2f)\n", verdict, addRatio)
	fmt.Fprintln(w, "(latency: lower is better; throughput: higher is better)")
	perRound := func(rs []roundResult) string {
		var parts []string
		for _, r := range rs {
			parts = append(parts, fmt.Sprintf("%.2f", ms(r.addP50)))
		}
		return strings.Join(parts, " ")
	}
	fmt.Fprintf(w, "ADD p50 per round (ms): nodenet %s; bridge+host-local %s\n", perRound(rep.nodenet), perRound(rep.ref))

	fmt.Fprintf(w, "\nwhere the time goes (p50 of %d invocations each, then nodenet's sequential phases):\n", o.floorRun)
	for _, f := range rep.floors {
		fmt.Fprintf(w, "  %-62s %.2fms\n", f.what, ms(f.p50))
	}
	for _, h := range []struct {
		verb   string
		client time.Duration
		d      histDelta
	}{{"ADD", rep.nnAddMean, rep.daemonAdd}, {"DEL", rep.nnDelMean, rep.daemonDel}} {
		if h.d.count == 0 {
			fmt.Fprintf(w, "  nodenet %s: no daemon-side observations of %s\n", h.verb, cniHistogram)
			continue
		}
		mean := time.Duration(h.d.sum / float64(h.d.count) * float64(time.Second))
		fmt.Fprintf(w, "  nodenet %s (%d requests): plugin invocation mean %.2fms\n", h.verb, h.d.count, ms(h.client))
		fmt.Fprintf(w, "      daemon-side (%s) mean %.2fms, p50 ~%.2fms\n", cniHistogram, ms(mean), h.d.quantile(0.5)*1000)
		fmt.Fprintf(w, "      outside the daemon's handler (exec, plugin process, socket round trip) mean %.2fms\n", ms(h.client-mean))
	}
	labels := slices.Sorted(maps.Keys(rep.syncs))
	fmt.Fprintf(w, "  daemon syncs (%s) during nodenet's sequential phases:\n", reconcileHistogram)
	for _, l := range labels {
		if s := rep.syncs[l]; s.count > 0 {
			fmt.Fprintf(w, "      %-40s %5.0f syncs, %8.1fms in total\n", l, s.count, s.seconds*1000)
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
