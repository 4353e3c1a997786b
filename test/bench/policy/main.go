// Command policy is `make bench-policy`: nodenet's NetworkPolicy
// enforcement against kube-router's network policy controller (v2.1.0,
// built here from the module proxy by peer/build.sh; see peer/tools.go for
// why not kube-network-policies), on the same objects, one agent at a
// time, each on a fresh node namespace of the test cluster:
//
//  1. new TCP connections/s from a client pod to a target pod on the node,
//     with no policy, then with every policy in force (the target isolated,
//     the client allowed);
//  2. with -policies policies over -pods pods: the time from a policy's
//     create returning to a probe connection between two pods of the node
//     observing it (a fresh connect every 2 ms), for policies that deny and
//     policies that allow, -rounds times each;
//  3. the agent's CPU time and peak memory over its run.
//
// Only the node's own pods have sandboxes (the harness' stand-in kubelet,
// on nodenet's CNI or on bridge + host-local for the peer); the others are
// Pod objects on a node that does not exist, with an IP set through the
// API. Everything is removed at the end, also on error or Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/nodenet/nodenet/test/bench/internal/benchkit"
	"github.com/nodenet/nodenet/test/harness"
)

var stderr = os.Stderr // progress lines; the report goes to stdout

// options are the command line flags.
type options struct {
	pods, policies, local int
	rounds                int
	connDuration          time.Duration
	connWorkers           int
	createWorkers         int
	only                  string // run only the agent with this name
}

func main() {
	var o options
	flag.IntVar(&o.pods, "pods", 5000, "pods in the cluster, the node's own included")
	flag.IntVar(&o.policies, "policies", 1000, "NetworkPolicies in force")
	flag.IntVar(&o.local, "local", 40, "filler pods on the agent's node (besides the probe namespace's 4)")
	flag.IntVar(&o.rounds, "rounds", 25, "deny + allow policy pairs timed")
	flag.DurationVar(&o.connDuration, "conn-duration", 5*time.Second, "how long each connection-rate run lasts")
	flag.IntVar(&o.connWorkers, "conn-workers", 4, "concurrent connecting workers")
	flag.IntVar(&o.createWorkers, "workers", 16, "concurrent API creates")
	flag.StringVar(&o.only, "only", "", "run only this agent (nodenet or kube-router)")
	flag.Parse()
	if o.policies < 2 || o.pods < o.local+4 || o.rounds < 1 || o.connWorkers < 1 || o.createWorkers < 1 {
		fmt.Fprintln(os.Stderr, "bench-policy: need -policies >= 2, -pods >= -local + 4, -rounds, -conn-workers, -workers >= 1")
		os.Exit(2)
	}
	benchkit.RequireRoot("bench-policy", "it creates network namespaces and runs the agents in them")
	benchkit.Main("bench-policy", func(ctx context.Context) error { return run(ctx, o) })
}

func run(ctx context.Context, o options) (err error) {
	// Before StartCluster, which builds nodenet and starts the control
	// plane in one step.
	peerBin, err := buildPeer()
	if err != nil {
		return err
	}
	c, err := benchkit.StartCluster(ctx, "bench-policy-", "starting the control plane ...")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, c.Stop()) }()
	cp := c.CP
	clusterBin = cp.Bin
	client, err := benchkit.BulkClient(cp)
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(c.Work, "admin.kubeconfig")
	if err := benchkit.WriteAdminKubeconfig(cp, kubeconfig); err != nil {
		return err
	}
	objs := &objects{client: client, workers: o.createWorkers}
	start := time.Now()
	if err := objs.namespaces(ctx); err != nil {
		return err
	}
	remote := o.pods - o.local - 4
	if err := objs.remotePods(ctx, remote); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "  %d namespaces, %d remote pods in %.1fs\n", nsCount+1, remote, time.Since(start).Seconds())
	b := &bench{opts: o, cp: cp, objs: objs, agents: agents(c.Nodenet, peerBin, kubeconfig, cp.Opts.ServiceCIDR)}
	rep := &report{opts: o}
	for _, a := range b.agents {
		if o.only != "" && a.name != o.only {
			continue
		}
		fmt.Fprintf(stderr, "%s ...\n", a.name)
		r, err := b.runAgent(ctx, a)
		if err != nil {
			return fmt.Errorf("%s: %w", a.name, err)
		}
		rep.agents = append(rep.agents, a)
		rep.results = append(rep.results, r)
	}
	rep.print(os.Stdout)
	return nil
}

// buildPeer builds (or finds cached) kube-router.
func buildPeer() (string, error) {
	if b := os.Getenv("NODENET_POLICY_PEER_BIN"); b != "" {
		return b, nil
	}
	out, err := exec.Command(filepath.Join(harness.RepoRoot(), "test", "bench", "policy", "peer", "build.sh")).Output()
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		return "", fmt.Errorf("build kube-router: %v: %s", err, ee.Stderr)
	}
	if err != nil {
		return "", fmt.Errorf("build kube-router: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}
