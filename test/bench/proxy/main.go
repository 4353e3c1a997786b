// Command proxy is `make bench-proxy`: nodenet's Service proxy against
// kube-proxy (the control plane's version, iptables and nftables modes) on
// the same Services, one agent at a time, each on a fresh node namespace
// of the test cluster:
//
//  1. cold start: agent start → the last Service's last endpoint chain is
//     in the kernel (then the whole ruleset's DNAT count is checked), at
//     each size;
//  2. latency from an EndpointSlice write to the new endpoint's chain in
//     the kernel, at the largest size;
//  3. new TCP connections/s from the node to one ClusterIP whose endpoint
//     is a host on the underlay, with 10 Services and at the largest size;
//  4. the agent's CPU time and peak memory per run.
//
// Services have no selector; their EndpointSlices are written here, with
// addresses nobody answers, so no pod networking is needed. Everything is
// removed at the end, also on error or Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nodenet/nodenet/test/bench/internal/benchkit"
	"github.com/nodenet/nodenet/test/harness"
)

var stderr = os.Stderr // progress lines; the report goes to stdout

// options are the command line flags.
type options struct {
	sizes         []int // Services, incl. the target, at each cold-start step
	changes       int   // endpoint changes timed in the latency phase
	connDuration  time.Duration
	connWorkers   int
	createWorkers int
	syncTimeout   time.Duration
	agents        []string // keys of the agents to run; all when empty
	profileDir    string   // where to save nodenet's profiles; "" saves none
	coldProfile   time.Duration
}

func main() {
	var o options
	var sizes string
	var quick bool
	flag.StringVar(&sizes, "sizes", "1000,5000,10000", "Service counts, ascending; latency and the second connection rate run at the last")
	flag.BoolVar(&quick, "quick", false, "a fast check: sizes 100,500, 20 changes, 2s of connections")
	flag.IntVar(&o.changes, "changes", 50, "EndpointSlice changes timed at the largest size")
	flag.DurationVar(&o.connDuration, "conn-duration", 5*time.Second, "how long each connection-rate run lasts")
	flag.IntVar(&o.connWorkers, "conn-workers", 8, "concurrent connecting workers")
	flag.IntVar(&o.createWorkers, "workers", 16, "concurrent API creates")
	flag.DurationVar(&o.syncTimeout, "sync-timeout", 10*time.Minute, "longest wait for an agent's cold start")
	var only string
	flag.StringVar(&o.profileDir, "profile", "", "save nodenet's heap profiles (after the cold start and at the end of each run) and a CPU profile of its start into this directory (each heap profile forces a GC: peak memory of such runs is not comparable)")
	flag.DurationVar(&o.coldProfile, "profile-cpu", 10*time.Second, "how long the CPU profile from the agent's start lasts (with -profile)")
	flag.StringVar(&only, "agents", "nn,ipt,nft", "agents to run: nn (nodenet), ipt (kube-proxy iptables), nft (kube-proxy nftables)")
	flag.Parse()
	o.agents = strings.Split(only, ",")
	if quick {
		sizes, o.changes, o.connDuration = "100,500", 20, 2*time.Second
	}
	var err error
	if o.sizes, err = parseSizes(sizes); err != nil || o.changes < 1 || o.connWorkers < 1 || o.createWorkers < 1 {
		fmt.Fprintln(os.Stderr, "bench-proxy: -sizes must be ascending counts of at least 11; -changes, -conn-workers and -workers at least 1", err)
		os.Exit(2)
	}
	benchkit.RequireRoot("bench-proxy", "it creates network namespaces and runs the proxies in them")
	benchkit.Main("bench-proxy", func(ctx context.Context) error { return run(ctx, o) })
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		if n <= connSmall || (len(out) > 0 && n <= out[len(out)-1]) {
			return nil, fmt.Errorf("size %d", n)
		}
		out = append(out, n)
	}
	return out, nil
}

// connSmall is the Service count of the first connection-rate run.
const connSmall = 10

func run(ctx context.Context, o options) (err error) {
	c, err := benchkit.StartCluster(ctx, "bench-proxy-", "starting the control plane ...")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, c.Stop()) }()
	cp := c.CP
	kubeconfig := filepath.Join(c.Work, "admin.kubeconfig")
	if err := benchkit.WriteAdminKubeconfig(cp, kubeconfig); err != nil {
		return err
	}
	client, err := benchkit.BulkClient(cp)
	if err != nil {
		return err
	}
	host, err := cp.AddHost("bp-backend")
	if err != nil {
		return err
	}
	stopBackend, err := serveBackend(host)
	if err != nil {
		return err
	}
	defer stopBackend()
	objs := &objects{client: client, workers: o.createWorkers}
	if err := objs.setup(ctx, host.IP); err != nil {
		return err
	}
	all := agents(c.Nodenet, filepath.Join(cp.Bin, "kube-proxy"), kubeconfig, cp.Opts.ClusterCIDR, o.profileDir != "")
	b := &bench{opts: o, cp: cp, objs: objs,
		agents: slices.DeleteFunc(all, func(a *agent) bool { return !slices.Contains(o.agents, a.key) })}
	if len(b.agents) == 0 {
		return fmt.Errorf("-agents %s: none of nn, ipt, nft", strings.Join(o.agents, ","))
	}
	rep := &report{opts: o, agents: b.agents, cold: map[int][]result{}}
	steps := append([]int{connSmall}, o.sizes...)
	largest := o.sizes[len(o.sizes)-1]
	for _, size := range steps {
		fmt.Fprintf(stderr, "creating Services up to %d ...\n", size)
		start := time.Now()
		if err := objs.grow(ctx, size-1); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "  %d Services (+ slices) in %.1fs\n", size, time.Since(start).Seconds())
		for _, a := range b.agents {
			r, err := b.runAgent(ctx, a, size, size == largest, size == connSmall || size == largest)
			if err != nil {
				return fmt.Errorf("%s at %d services: %w", a.name, size, err)
			}
			rep.cold[size] = append(rep.cold[size], r)
		}
	}
	rep.sizes = slices.Insert(slices.Clone(o.sizes), 0, connSmall)
	rep.print(os.Stdout)
	return nil
}

// serveBackend accepts connections on the host's :8080 and closes each at
// once: the target Service's one endpoint.
func serveBackend(h *harness.Host) (stop func(), err error) {
	l, err := h.NS.Listen("tcp", net.JoinHostPort(netip.IPv4Unspecified().String(), strconv.Itoa(endpointPort)))
	if err != nil {
		return nil, fmt.Errorf("backend listener: %w", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			c.Close()
		}
	}()
	return func() { l.Close(); <-done }, nil
}
