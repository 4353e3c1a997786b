package main

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nodenet/nodenet/test/harness"
)

// syncSum is the count and total time of one kind of sync.
type syncSum struct {
	count   float64
	seconds float64
}

func (s syncSum) mean() time.Duration {
	if s.count == 0 {
		return 0
	}
	return time.Duration(s.seconds / s.count * float64(time.Second))
}

// histogramSums reads <name>_count and <name>_sum of the series selected by
// key(labels) (ok=false skips the series), summed by key.
func histogramSums(page, name string, key func(labels string) (string, bool)) (map[string]syncSum, error) {
	out := map[string]syncSum{}
	for line := range strings.SplitSeq(page, "\n") {
		suffix, ok := strings.CutPrefix(line, name)
		if !ok {
			continue
		}
		kind, rest, _ := strings.Cut(suffix, " ")
		labels := ""
		if i := strings.IndexByte(suffix, '{'); i >= 0 {
			kind = suffix[:i]
			labels, rest, _ = strings.Cut(suffix[i+1:], "} ")
		}
		if kind != "_count" && kind != "_sum" {
			continue
		}
		k, ok := key(labels)
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		s := out[k]
		if kind == "_count" {
			s.count += v
		} else {
			s.seconds += v
		}
		out[k] = s
	}
	return out, nil
}

// nodenetSyncs is the proxy component's syncs by kind (full, partial),
// from the daemon's /metrics.
func nodenetSyncs(n *harness.Node) (map[string]syncSum, error) {
	code, page, err := n.Admin("/metrics")
	if err != nil {
		return nil, fmt.Errorf("%s /metrics: %w", n.Name, err)
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("%s /metrics: HTTP %d", n.Name, code)
	}
	return histogramSums(page, "nodenet_reconcile_duration_seconds", func(labels string) (string, bool) {
		if !strings.Contains(labels, `component="proxy"`) {
			return "", false
		}
		_, kind, _ := strings.Cut(labels, `kind="`)
		kind, _, _ = strings.Cut(kind, `"`)
		return kind, true
	})
}

// kubeProxySyncs is kube-proxy's full and partial syncs from its metrics
// listener inside the node namespace.
func kubeProxySyncs(n *harness.Node) (map[string]syncSum, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: n.NS.DialContext, DisableKeepAlives: true}}
	resp, err := c.Get("http://127.0.0.1:10249/metrics")
	if err != nil {
		return nil, fmt.Errorf("kube-proxy metrics on %s: %w", n.Name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("kube-proxy metrics on %s: %w", n.Name, err)
	}
	out := map[string]syncSum{}
	for kind, name := range map[string]string{
		"full":    "kubeproxy_sync_full_proxy_rules_duration_seconds",
		"partial": "kubeproxy_sync_partial_proxy_rules_duration_seconds",
	} {
		m, err := histogramSums(string(b), name, func(string) (string, bool) { return kind, true })
		if err != nil {
			return nil, err
		}
		out[kind] = m[kind]
	}
	return out, nil
}
