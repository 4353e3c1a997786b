package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodenet/nodenet/test/bench/internal/benchkit"
	"github.com/nodenet/nodenet/test/harness"
)

// result is what one agent's run measured.
type result struct {
	ready      time.Duration // agent started -> enforcing (its readiness)
	cps0       float64       // new connections/s client -> target, no policies
	cps1000    float64       // the same with every policy in force (target isolated, client allowed)
	connErrs   int64         // failed connects in both runs
	bulk       time.Duration // last policy create returned -> a marker policy created after it is enforced
	deny       []time.Duration
	allow      []time.Duration
	lost       int // flips not enforced within flipLimit
	stats      benchkit.ProcStats
	load       string
	diag       string
	bulkCreate time.Duration // creating all policies (API only)
	errLines   int           // log lines of the agent reporting an error
	firstErr   string
	kernel     kernelCost
	compile    time.Duration // nodenet's Build + Rules on the same objects, in this process
}

type bench struct {
	opts   options
	cp     *harness.ControlPlane
	objs   *objects
	agents []*agent
}

// flipLimit bounds the wait for one policy to be enforced.
const flipLimit = 30 * time.Second

// local pods of each run: the probe namespace's three, and opts.local
// filler pods spread over the filler namespaces.
type localPods struct {
	client, target, server, outsider *harness.Sandbox
}

// runAgent starts a on a fresh node, with no policies and every pod in
// place, and measures; it removes the node and the policies afterwards.
func (b *bench) runAgent(ctx context.Context, a *agent) (r result, err error) {
	n, err := b.cp.AddNode(ctx, a.key)
	if err != nil {
		return r, err
	}
	var p *harness.Proc
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err != nil && p != nil {
			fmt.Fprintf(stderr, "==== %s log (tail)\n%s\n", a.name, p.Tail(30))
		}
		// The stand-in kubelet tears the sandboxes down while the agent
		// still runs (nodenet's CNI DEL needs its daemon).
		err = errors.Join(err, n.Remove(rctx))
		if p != nil {
			if serr := p.Stop(30 * time.Second); serr != nil {
				err = errors.Join(err, fmt.Errorf("stop %s: %w", a.name, serr))
			}
		}
		err = errors.Join(err, b.deleteLocal(rctx, n.Name), b.objs.deletePolicies(rctx))
	}()
	start := time.Now()
	if p, err = a.start(ctx, n); err != nil {
		return r, fmt.Errorf("start %s: %w", a.name, err)
	}
	r.ready = time.Since(start)
	fmt.Fprintf(stderr, "  %s: enforcing %.2fs after start\n", a.name, r.ready.Seconds())
	lp, err := b.startLocal(ctx, n)
	if err != nil {
		return r, err
	}
	target := net.JoinHostPort(lp.target.IPs[0].String(), strconv.Itoa(podPort))
	server := net.JoinHostPort(lp.server.IPs[0].String(), strconv.Itoa(podPort))

	// (1) connection rate with no policy.
	var fails int64
	if r.cps0, fails, err = connRate(ctx, lp.client.NS, target, b.opts.connWorkers, b.opts.connDuration); err != nil {
		return r, err
	}
	r.connErrs += fails
	fmt.Fprintf(stderr, "  %s: %.0f connections/s with no policy\n", a.name, r.cps0)

	// (2) every policy, then a marker: how long until the agent caught up.
	t0 := time.Now()
	if err := b.objs.policies(ctx, b.opts.policies); err != nil {
		return r, err
	}
	r.bulkCreate = time.Since(t0)
	wrote, err := b.flipPolicy(ctx, "marker", false)
	if err != nil {
		return r, err
	}
	if r.bulk, err = waitFlip(ctx, lp.client.NS, server, false, wrote, 10*time.Minute); err != nil {
		return r, fmt.Errorf("%s: marker after %d policies: %w", a.name, b.opts.policies, err)
	}
	fmt.Fprintf(stderr, "  %s: %d policies created in %.1fs; a policy created after them enforced %.2fs later\n",
		a.name, b.opts.policies, r.bulkCreate.Seconds(), r.bulk.Seconds())
	if err := b.deleteFlip(ctx, "marker"); err != nil {
		return r, err
	}
	if _, err := waitFlip(ctx, lp.client.NS, server, true, time.Now(), flipLimit); err != nil {
		return r, fmt.Errorf("%s: marker deleted: %w", a.name, err)
	}
	// The target is isolated now: someone not allowed must be refused.
	if dialOnce(lp.outsider.NS, target, 300*time.Millisecond) == nil {
		return r, fmt.Errorf("%s: the outsider pod reached the target through %d policies", a.name, b.opts.policies)
	}

	// (3) connection rate with every policy in force.
	if r.cps1000, fails, err = connRate(ctx, lp.client.NS, target, b.opts.connWorkers, b.opts.connDuration); err != nil {
		return r, err
	}
	r.connErrs += fails
	fmt.Fprintf(stderr, "  %s: %.0f connections/s with %d policies\n", a.name, r.cps1000, b.opts.policies)

	// (4) enforcement latency: deny, then allow, then remove both.
	for i := range b.opts.rounds {
		for _, allow := range []bool{false, true} {
			name := fmt.Sprintf("%s-%d", map[bool]string{false: "deny", true: "allow"}[allow], i)
			logAt := len(p.Log())
			wrote, err := b.flipPolicy(ctx, name, allow)
			if err != nil {
				return r, err
			}
			d, err := waitFlip(ctx, lp.client.NS, server, allow, wrote, flipLimit)
			if err != nil {
				fmt.Fprintf(stderr, "  %s: %s: %v\n", a.name, name, err)
				r.lost++
				continue
			}
			if d > time.Second {
				fmt.Fprintf(stderr, "  %s: %s created at %s, enforced only after %.2fs; its sync log since:\n%s",
					a.name, name, wrote.UTC().Format("15:04:05.000"), d.Seconds(), syncLog(p.Log()[logAt:], a.isSync, 12))
			}
			if allow {
				r.allow = append(r.allow, d)
			} else {
				r.deny = append(r.deny, d)
			}
		}
		for _, name := range []string{fmt.Sprintf("deny-%d", i), fmt.Sprintf("allow-%d", i)} {
			if err := b.deleteFlip(ctx, name); err != nil {
				return r, err
			}
		}
		if _, err := waitFlip(ctx, lp.client.NS, server, true, time.Now(), flipLimit); err != nil {
			return r, fmt.Errorf("%s: round %d cleaned up: %w", a.name, i, err)
		}
	}
	all := append(append([]time.Duration{}, r.deny...), r.allow...)
	fmt.Fprintf(stderr, "  %s: policy create -> enforced p50 %.1fms p99 %.1fms (%d flips, %d lost)\n",
		a.name, ms(benchkit.Percentile(all, 0.5)), ms(benchkit.Percentile(all, 0.99)), len(all), r.lost)

	r.diag = a.diag(n)
	if r.stats, err = benchkit.ReadProcStats(p.Pid()); err != nil {
		return r, err
	}
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		r.load = strings.Fields(string(la))[0]
	}
	r.errLines, r.firstErr = failures(p, a.isError)
	// Diagnostics, after the agent's numbers were taken.
	r.kernel = measureKernel(ctx, n, harness.Prefix+"scratch-"+a.key)
	if a.key == "nn" {
		if r.compile, err = compileCost(ctx, b.objs, n.Name); err != nil {
			return r, err
		}
	}
	return r, nil
}

// flipPolicy creates a policy on the probe server: allow=false isolates it
// with no rule (deny all ingress), allow=true lets the client in. It
// returns when the create returned.
func (b *bench) flipPolicy(ctx context.Context, name string, allow bool) (time.Time, error) {
	p := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: probeNS},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"role": "server"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		},
	}
	if allow {
		tcp, port := corev1.ProtocolTCP, intstr.FromInt32(podPort)
		p.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}}}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}},
		}}
	}
	if _, err := b.objs.client.NetworkingV1().NetworkPolicies(probeNS).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		return time.Time{}, fmt.Errorf("create policy %s: %w", name, err)
	}
	return time.Now(), nil
}

func (b *bench) deleteFlip(ctx context.Context, name string) error {
	if err := b.objs.client.NetworkingV1().NetworkPolicies(probeNS).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		return fmt.Errorf("delete policy %s: %w", name, err)
	}
	return nil
}

// startLocal creates the pods of node n (the probe namespace's client,
// target, server and outsider, and opts.local filler pods) and waits
// until the stand-in kubelet runs them all.
func (b *bench) startLocal(ctx context.Context, n *harness.Node) (*localPods, error) {
	k, err := n.StartKubelet(ctx)
	if err != nil {
		return nil, err
	}
	type want struct{ ns, name string }
	var pods []want
	roles := []string{"client", "target", "server", "outsider"}
	for _, role := range roles {
		labels := map[string]string{"role": role}
		if role == "target" {
			labels["app"] = "app-0" // also selected by a filler policy
		}
		if _, err := b.objs.client.CoreV1().Pods(probeNS).Create(ctx, podSpec(probeNS, role, n.Name, labels), metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("create pod %s: %w", role, err)
		}
		pods = append(pods, want{probeNS, role})
	}
	for i := range b.opts.local {
		ns, name := nsName(i%nsCount), fmt.Sprintf("local-%03d", i)
		if _, err := b.objs.client.CoreV1().Pods(ns).Create(ctx, podSpec(ns, name, n.Name, fillerLabels(i)), metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("create pod %s/%s: %w", ns, name, err)
		}
		pods = append(pods, want{ns, name})
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	sbs := map[string]*harness.Sandbox{}
	for _, w := range pods {
		sb, err := k.WaitRunning(wctx, w.ns, w.name)
		if err != nil {
			return nil, err
		}
		sbs[w.ns+"/"+w.name] = sb
	}
	at := func(role string) *harness.Sandbox { return sbs[probeNS+"/"+role] }
	return &localPods{client: at("client"), target: at("target"), server: at("server"), outsider: at("outsider")}, nil
}

// deleteLocal removes the Pod objects of node (their sandboxes are gone
// with the node) and waits until they are.
func (b *bench) deleteLocal(ctx context.Context, node string) error {
	zero := int64(0)
	sel := metav1.ListOptions{FieldSelector: "spec.nodeName=" + node}
	var errs []error
	for i := range nsCount + 1 {
		ns := probeNS
		if i < nsCount {
			ns = nsName(i)
		}
		errs = append(errs, b.objs.client.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, sel))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete pods of %s: %w", node, err)
	}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := b.objs.client.CoreV1().Pods("").List(ctx, sel)
		return err == nil && len(l.Items) == 0, nil
	})
}

// syncLog is the first max lines of log that isSync selects, indented.
func syncLog(log string, isSync func(string) bool, max int) string {
	var b strings.Builder
	for line := range strings.SplitSeq(log, "\n") {
		if max > 0 && isSync(line) {
			fmt.Fprintf(&b, "    %.220s\n", line)
			max--
		}
	}
	return b.String()
}
