package enforcer

import (
	"bufio"
	"bytes"
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodenet/nodenet/policy"
)

// deniedDesc counts every packet a pod chain dropped, from the kernel's
// rule counters: exact, unlike the rate-limited log. A chain's counters
// restart at zero when its rules are rewritten (the pod's policies
// changed) or the pod goes, which Prometheus reads as a counter reset.
var deniedDesc = prometheus.NewDesc("nodenet_policy_denied_packets_total",
	"Packets dropped by NetworkPolicy on this node, by the isolated pod's namespace and direction, "+
		"from the DROP rules' kernel counters (which restart when a pod's rules are rewritten).",
	[]string{"namespace", "direction"}, nil)

// scrapeTimeout bounds the iptables-save a scrape runs.
const scrapeTimeout = 5 * time.Second

type deniedCollector struct{ c *Component }

func (deniedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- deniedDesc }

func (d deniedCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	counts, err := d.c.dropCounts(ctx)
	if err != nil {
		d.c.log.Warn("read policy drop counters", "err", err)
		ch <- prometheus.NewInvalidMetric(deniedDesc, err)
		return
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(deniedDesc, prometheus.CounterValue, float64(n), k[0], k[1])
	}
}

// dropCounts sums, per namespace and direction of the isolated pods of the
// last applied model, the packets their chains' final DROP counted.
func (c *Component) dropCounts(ctx context.Context) (map[[2]string]uint64, error) {
	m := c.Model()
	if m == nil || c.opts.SaveCounters == nil {
		return nil, nil
	}
	owner := map[string][2]string{} // chain -> namespace, direction
	for _, iso := range m.Isolated() {
		ns, _, _ := strings.Cut(iso.Pod, "/")
		in, eg := policy.PodChains(iso.Pod)
		owner[in] = [2]string{ns, "ingress"}
		owner[eg] = [2]string{ns, "egress"}
	}
	out := map[[2]string]uint64{}
	for fam := range c.opts.IPTables {
		dump, err := c.opts.SaveCounters(ctx, fam)
		if err != nil {
			return nil, err
		}
		for chain, n := range dropCounters(dump) {
			if k, ok := owner[chain]; ok {
				out[k] += n
			}
		}
	}
	return out, nil
}

// dropCounters reads "[packets:bytes] -A CHAIN -j DROP" lines of an
// iptables-save -c dump: the packets of each chain's plain DROP rules.
func dropCounters(dump []byte) map[string]uint64 {
	out := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(dump))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		counters, rest, ok := strings.Cut(line, " ")
		if !ok || !strings.HasPrefix(counters, "[") || !strings.HasSuffix(counters, "]") {
			continue
		}
		chain, ok := strings.CutPrefix(rest, "-A ")
		if !ok {
			continue
		}
		chain, rule, _ := strings.Cut(chain, " ")
		if rule != "-j DROP" {
			continue
		}
		pkts, _, _ := strings.Cut(counters[1:len(counters)-1], ":")
		n, err := strconv.ParseUint(pkts, 10, 64)
		if err != nil {
			continue
		}
		out[chain] += n
	}
	return out
}

// Collector is the exact drop counter, for the metrics registry.
func (c *Component) Collector() prometheus.Collector { return deniedCollector{c} }
