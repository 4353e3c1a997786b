package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodenet/nodenet/test/bench/internal/benchkit"
	"github.com/nodenet/nodenet/test/harness"
)

// agent is one NetworkPolicy implementation under test: how to give a
// fresh node pod networking and the agent, and how to read its own
// account of where its time went.
type agent struct {
	name string // column header
	key  string // node name
	// start prepares n (pod networking) and runs the agent inside n's
	// namespace; it returns once the agent enforces (ready).
	start func(ctx context.Context, n *harness.Node) (*harness.Proc, error)
	// diag is the agent's own metrics, summed up in one line.
	diag func(n *harness.Node) string
	// isError tells the lines of its log that report an error.
	isError func(line string) bool
	// isSync tells the lines of its log that report a policy sync, shown
	// for a slow flip.
	isSync func(line string) bool
}

func agents(nodenetBin, peerBin, kubeconfig, serviceCIDR string) []*agent {
	return []*agent{
		{
			name: "nodenet", key: "nn",
			start: func(ctx context.Context, n *harness.Node) (*harness.Proc, error) {
				// The harness config at debug: one line per sync, which a slow
				// flip shows.
				if err := n.WriteConfig(n.DefaultConfig("")); err != nil {
					return nil, err
				}
				if err := n.Start(nodenetBin); err != nil {
					return nil, err
				}
				return n.Daemon, n.WaitReady(ctx, 5*time.Minute)
			},
			diag:    nodenetDiag,
			isError: func(l string) bool { return strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") },
			isSync: func(l string) bool {
				return strings.Contains(l, "runner=policy") || strings.Contains(l, "owner=policy")
			},
		},
		{
			name: "kube-router", key: "kr",
			start: func(ctx context.Context, n *harness.Node) (*harness.Proc, error) {
				if err := referenceCNI(n); err != nil {
					return nil, err
				}
				p, err := harness.StartProc(n.NS, "kube-router-"+n.Name, filepath.Join(n.Dir, "kube-router.log"), peerBin,
					"--kubeconfig", kubeconfig,
					"--hostname-override", n.Name,
					// Only the network policy controller.
					"--run-firewall=true", "--run-router=false", "--run-service-proxy=false", "--run-loadbalancer=false",
					"--service-cluster-ip-range", serviceCIDR,
					"--metrics-addr", "127.0.0.1", "--metrics-port", "9081",
					"--health-port", "0",
					"--v", "1", // one line at the start and end of each full sync, which a slow flip shows
				)
				if err != nil {
					return nil, err
				}
				// Enforcing once its first full sync is through.
				err = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 5*time.Minute, true, func(context.Context) (bool, error) {
					if p.Exited() {
						return false, fmt.Errorf("kube-router exited: %v\n%s", p.ExitErr(), p.Tail(30))
					}
					page, err := peerMetrics(n)
					return err == nil && histogram(page, "kube_router_controller_iptables_sync_time", "").count > 0, nil
				})
				return p, err
			},
			diag:    peerDiag,
			isError: func(l string) bool { return strings.HasPrefix(l, "E") || strings.HasPrefix(l, "W") }, // klog
			isSync: func(l string) bool {
				return strings.Contains(l, "sync of iptables") || strings.Contains(l, "sync iptables took")
			},
		},
	}
}

// referenceCNI gives n pod networking without nodenet: the reference
// bridge + host-local plugins on the node's podCIDR, configured as
// bench-cni does. Bridged pod-to-pod traffic passes netfilter
// (bridge-nf-call-iptables, per namespace, 1 by default here; set anyway).
func referenceCNI(n *harness.Node) error {
	for _, d := range []string{n.CNIBinDir, n.CNIConfDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	for _, p := range []string{"bridge", "host-local"} {
		if err := os.Symlink(filepath.Join(clusterBin, p), filepath.Join(n.CNIBinDir, p)); err != nil {
			return err
		}
	}
	conf, err := json.MarshalIndent(map[string]any{
		"cniVersion": "1.0.0", "name": "bench-ref",
		"plugins": []any{map[string]any{
			"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true, "mtu": 1500,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": n.PodCIDR}}},
				"dataDir": filepath.Join(n.Dir, "host-local"), // removed with the node
			},
		}},
	}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(n.CNIConfDir, "10-bench-ref.conflist"), conf, 0o644); err != nil {
		return err
	}
	_, err = benchkit.InNS(n.NS, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1")
	return err
}

// clusterBin is the control plane's binary directory (reference plugins).
var clusterBin string

// nodenetDiag: the policy component's syncs (count, mean, total) from
// /metrics.
func nodenetDiag(n *harness.Node) string {
	code, page, err := n.Admin("/metrics")
	if err != nil || code != http.StatusOK {
		return fmt.Sprintf("/metrics: %d %v", code, err)
	}
	parts := []string{fmt.Sprintf("policy sync errors %s, policy syncs over 1.024s %s",
		gauge(page, `nodenet_reconcile_errors_total{component="policy"}`), slowSyncs(page, "policy"))}
	for _, comp := range []string{"policy", "proxy", "pods"} {
		s := histogram(page, "nodenet_reconcile_duration_seconds", `component="`+comp+`"`)
		if s.count > 0 {
			parts = append(parts, fmt.Sprintf("%s syncs %.0f x mean %s (total %.2fs)", comp, s.count, round(s.mean()), s.seconds))
		}
	}
	return strings.Join(parts, "; ")
}

func peerMetrics(n *harness.Node) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: n.NS.DialContext, DisableKeepAlives: true}}
	resp, err := c.Get("http://127.0.0.1:9081/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// peerDiag: kube-router's full syncs and their parts, from its metrics.
func peerDiag(n *harness.Node) string {
	page, err := peerMetrics(n)
	if err != nil {
		return fmt.Sprintf("metrics: %v", err)
	}
	var parts []string
	for _, m := range []struct{ label, name string }{
		{"full syncs", "kube_router_controller_iptables_sync_time"},
		{"of which policy chains", "kube_router_controller_policy_chains_sync_time"},
		{"ipset restore", "kube_router_controller_policy_ipset_v4_restore_time"},
		{"iptables-save", "kube_router_controller_iptables_v4_save_time"},
		{"iptables-restore", "kube_router_controller_iptables_v4_restore_time"},
	} {
		s := histogram(page, m.name, "")
		parts = append(parts, fmt.Sprintf("%s %.0f x mean %s (total %.2fs)", m.label, s.count, round(s.mean()), s.seconds))
	}
	return strings.Join(parts, "; ")
}

// slowSyncs is how many of a component's syncs took over 1.024 s (a
// bucket bound of nodenet's reconcile histogram).
func slowSyncs(page, comp string) string {
	var total, fast float64
	for line := range strings.SplitSeq(page, "\n") {
		if !strings.HasPrefix(line, "nodenet_reconcile_duration_seconds_") || !strings.Contains(line, `component="`+comp+`"`) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(line, "nodenet_reconcile_duration_seconds_count"):
			total += v
		case strings.Contains(line, `le="1.024"`):
			fast += v
		}
	}
	return strconv.FormatFloat(total-fast, 'f', 0, 64)
}
