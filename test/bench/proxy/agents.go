package main

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nodenet/nodenet/test/bench/internal/benchkit"
	"github.com/nodenet/nodenet/test/harness"
)

// agent is one Service proxy under test: how to start it on a fresh node,
// and how to ask the node's kernel whether a given endpoint is programmed.
type agent struct {
	name string // column header
	key  string // node name prefix
	// start runs the agent inside n's namespace.
	start func(n *harness.Node) (*harness.Proc, error)
	// endpointQuery lists the one chain that DNATs svc's traffic to ep
	// (the endpoint's own chain or the service's); it fails while the
	// chain does not exist.
	endpointQuery func(svc string, ep netip.Addr) []string
	// dumpQuery prints the agent's whole nat ruleset.
	dumpQuery []string
	iptables  bool // the ruleset is iptables (restorable with iptables-restore)
	// syncs reads the agent's own sync metrics by kind (full, partial).
	syncs func(n *harness.Node) (map[string]syncSum, error)
	// heapProfile fetches the agent's heap profile; nil when it has none.
	heapProfile func(n *harness.Node) ([]byte, error)
	// cpuProfile profiles the agent's CPU for d (waiting for its
	// listener first); nil when it has none.
	cpuProfile func(n *harness.Node, d time.Duration) ([]byte, error)
}

// agents are nodenet, kube-proxy in iptables mode and in nftables mode.
func agents(nodenetBin, kubeProxyBin, kubeconfig, clusterCIDR string, profile bool) []*agent {
	kubeProxy := func(mode string) func(*harness.Node) (*harness.Proc, error) {
		return func(n *harness.Node) (*harness.Proc, error) {
			return harness.StartProc(n.NS, "kube-proxy-"+n.Name, filepath.Join(n.Dir, "kube-proxy.log"), kubeProxyBin,
				"--kubeconfig", kubeconfig,
				"--hostname-override", n.Name,
				"--cluster-cidr", clusterCIDR,
				"--proxy-mode", mode,
				// Only the node's own namespace: no global sysctls.
				"--conntrack-max-per-core=0", "--conntrack-min=0",
				"--conntrack-tcp-timeout-established=0", "--conntrack-tcp-timeout-close-wait=0",
				"--oom-score-adj=0",
				"--metrics-bind-address", "127.0.0.1:10249",
				"--healthz-bind-address", "127.0.0.1:10256",
			)
		}
	}
	sep := func(chain func(string, netip.Addr) string) func(string, netip.Addr) []string {
		return func(svc string, ep netip.Addr) []string {
			return []string{"iptables", "-w", "-t", "nat", "-S", chain(svc, ep)}
		}
	}
	return []*agent{
		{
			name: "nodenet", key: "nn",
			start: func(n *harness.Node) (*harness.Proc, error) {
				// Info, not the harness' debug: logging must not weigh on the timing.
				cfg := strings.Replace(n.DefaultConfig(""), `level = "debug"`, `level = "info"`, 1)
				if profile {
					cfg = strings.Replace(cfg, "[admin]\n", "[admin]\npprof = true\n", 1)
				}
				if err := n.WriteConfig(cfg); err != nil {
					return nil, err
				}
				if err := n.Start(nodenetBin); err != nil {
					return nil, err
				}
				return n.Daemon, nil
			},
			// No per-endpoint chains: the service chain DNATs itself.
			endpointQuery: sep(func(svc string, _ netip.Addr) string { return nodenetSVC(svc) }),
			dumpQuery:     []string{"iptables-save", "-t", "nat"},
			iptables:      true,
			syncs:         nodenetSyncs,
			heapProfile: func(n *harness.Node) ([]byte, error) {
				if code, page, err := n.Admin("/debug/pprof/heap?debug=1"); err == nil && code == http.StatusOK {
					// The runtime's memory statistics close the text form.
					if _, stats, ok := strings.Cut(page, "\n# runtime.MemStats"); ok {
						var kept []string
						for line := range strings.Lines(stats) {
							for _, k := range []string{"HeapAlloc", "HeapSys", "HeapReleased", "NextGC", "NumGC"} {
								if strings.HasPrefix(line, "# "+k+" = ") {
									kept = append(kept, strings.TrimSpace(strings.TrimPrefix(line, "# ")))
								}
							}
						}
						fmt.Fprintf(stderr, "  nodenet memory: %s\n", strings.Join(kept, ", "))
					}
				}
				code, page, err := n.Admin("/debug/pprof/heap?gc=1") // a GC first: the profile is then current
				if err == nil && code != http.StatusOK {
					err = fmt.Errorf("HTTP %d: %.200s", code, page)
				}
				return []byte(page), err
			},
			cpuProfile: func(n *harness.Node, d time.Duration) ([]byte, error) {
				c := &http.Client{Timeout: d + 10*time.Second, Transport: &http.Transport{DialContext: n.NS.DialContext, DisableKeepAlives: true}}
				for start := time.Now(); ; time.Sleep(5 * time.Millisecond) {
					resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:9490/debug/pprof/profile?seconds=%d", int(d.Seconds())))
					if err != nil {
						if time.Since(start) > 10*time.Second {
							return nil, err
						}
						continue // not listening yet
					}
					b, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, b)
					}
					return b, err
				}
			},
		},
		{
			name: "kube-proxy iptables", key: "ipt",
			start:         kubeProxy("iptables"),
			endpointQuery: sep(kubeProxySEP),
			dumpQuery:     []string{"iptables-save", "-t", "nat"},
			iptables:      true,
			syncs:         kubeProxySyncs,
		},
		{
			name: "kube-proxy nftables", key: "nft",
			start: kubeProxy("nftables"),
			// v1.37 has no per-endpoint chains: the service chain DNATs
			// through a numgen map of its endpoints.
			endpointQuery: func(svc string, _ netip.Addr) []string {
				return []string{"nft", "list", "chain", "ip", "kube-proxy", kubeProxyNFTService(svc)}
			},
			dumpQuery: []string{"nft", "list", "table", "ip", "kube-proxy"},
			syncs:     kubeProxySyncs,
		},
	}
}

// Chain names, as each agent derives them (datapath/proxy/names.go;
// kubernetes v1.37.2 pkg/proxy/iptables and pkg/proxy/nftables).

func b32sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(sum[:])
}

func epString(ep netip.Addr) string { return netip.AddrPortFrom(ep, endpointPort).String() }

func nodenetSVC(svc string) string {
	return "NODENET-SVC-" + b32sha(benchNS + "/" + svc + ":" + portName + "/tcp")[:16]
}

func kubeProxySEP(svc string, ep netip.Addr) string {
	return "KUBE-SEP-" + b32sha(benchNS + "/" + svc + ":" + portName + "tcp" + epString(ep))[:16]
}

func kubeProxyNFTService(svc string) string {
	base := fmt.Sprintf("%s/%s/tcp/%s", benchNS, svc, portName)
	return "service-" + b32sha(base)[:8] + "-" + base
}

// dnatTarget matches an endpoint in a DNAT statement as iptables-save
// prints it (--to-destination 10.0.0.1:8080) and as nft prints it in a
// numgen map (10.0.0.1 . 8080) or alone (dnat to 10.0.0.1:8080).
var dnatTarget = regexp.MustCompile(`(?:^|[ ,{])(\d+\.\d+\.\d+\.\d+)(?::| \. )` + strconv.Itoa(endpointPort) + `\b`)

// dnatEndpoints lists the endpoints of the DNAT statements in a dump.
func dnatEndpoints(dump string) []string {
	var out []string
	for line := range strings.SplitSeq(dump, "\n") {
		// Whole words: chain names are base32 hashes and may hold "DNAT".
		if !strings.Contains(line, "-j DNAT ") && !strings.Contains(line, " dnat ") {
			continue
		}
		if _, to, ok := strings.Cut(line, "-j DNAT --to-destination "); ok {
			// iptables: only the target; comments may name endpoints too.
			line = " " + to
		}
		for _, m := range dnatTarget.FindAllStringSubmatch(line, -1) {
			out = append(out, m[1])
		}
	}
	return out
}

// programmed reports whether the agent's chain for (svc, ep) is in the
// kernel and DNATs to ep.
func (a *agent) programmed(ns *harness.NS, svc string, ep netip.Addr) bool {
	out, err := benchkit.InNS(ns, a.endpointQuery(svc, ep)...)
	return err == nil && slices.Contains(dnatEndpoints(out), ep.String())
}

// countDNAT counts the endpoints DNATed to in the agent's whole nat ruleset.
func (a *agent) countDNAT(ns *harness.NS) (int, error) {
	out, err := benchkit.InNS(ns, a.dumpQuery...)
	if err != nil {
		return 0, err
	}
	return len(dnatEndpoints(out)), nil
}
