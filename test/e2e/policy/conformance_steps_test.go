package policy

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// convergeWithin bounds how long the rules may take to agree with a step.
const convergeWithin = 20 * time.Second

// confCase is one conformance case: it changes policies, labels or pods
// and checks the whole matrix after each change.
type confCase struct {
	name string
	run  func(s *step)
}

// step is what a case works with; every method fails the case on error.
type step struct {
	*confWorld
	t *testing.T
}

func (s *step) apply(nps ...*networkingv1.NetworkPolicy) {
	s.t.Helper()
	for _, np := range nps {
		if _, err := suite.CP.Client.NetworkingV1().NetworkPolicies(np.Namespace).Create(context.Background(), np, metav1.CreateOptions{}); err != nil {
			s.t.Fatalf("create policy %s/%s: %v", np.Namespace, np.Name, err)
		}
	}
}

// update replaces the spec of an existing policy.
func (s *step) update(np *networkingv1.NetworkPolicy) {
	s.t.Helper()
	api := suite.CP.Client.NetworkingV1().NetworkPolicies(np.Namespace)
	cur, err := api.Get(context.Background(), np.Name, metav1.GetOptions{})
	if err != nil {
		s.t.Fatalf("update policy %s/%s: %v", np.Namespace, np.Name, err)
	}
	cur.Spec = np.Spec
	if _, err := api.Update(context.Background(), cur, metav1.UpdateOptions{}); err != nil {
		s.t.Fatalf("update policy %s/%s: %v", np.Namespace, np.Name, err)
	}
}

func (s *step) remove(namespace, name string) {
	s.t.Helper()
	if err := suite.CP.Client.NetworkingV1().NetworkPolicies(namespace).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		s.t.Fatalf("delete policy %s/%s: %v", namespace, name, err)
	}
}

// labelNS sets (value != "") or removes a label of namespace ns.
func (s *step) labelNS(ns, key, value string) {
	s.t.Helper()
	s.label(s.addedNS, "", ns, key, value)
}

// labelPod sets (value != "") or removes a label of pod "ns/name".
func (s *step) labelPod(pod, key, value string) {
	s.t.Helper()
	ns, name, _ := strings.Cut(pod, "/")
	s.label(s.addedPods, ns, name, key, value)
}

func (s *step) label(added map[string]map[string]bool, ns, name, key, value string) {
	s.t.Helper()
	var v any
	if value != "" {
		v = value
	}
	if err := mergeLabels(context.Background(), ns, name, map[string]any{key: v}); err != nil {
		s.t.Fatal(err)
	}
	id := strings.TrimPrefix(ns+"/"+name, "/")
	if added[id] == nil {
		added[id] = map[string]bool{}
	}
	added[id][key] = true
}

// recreatePod deletes the pod and creates it again on node: a new
// sandbox, and a new address. From the moment the new sandbox is up (CNI
// ADD returned) nothing want blocks may get through: one round probes it
// at once, before the kubelet even reports the pod running.
func (s *step) recreatePod(pod string, node int, want *truth) {
	s.t.Helper()
	ctx := context.Background()
	ns, name, _ := strings.Cut(pod, "/")
	zero := int64(0)
	if err := suite.CP.Client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		s.t.Fatalf("delete pod %s: %v", pod, err)
	}
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := suite.CP.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		s.t.Fatalf("pod %s not gone: %v", pod, err)
	}
	i := podIndex(pod)
	old := s.p.sandboxes()[i].IPs[0]
	sb, err := s.createPod(ctx, pod, node, 5*time.Millisecond)
	if err != nil {
		s.t.Fatal(err)
	}
	s.p.replace(i, sb)
	s.node[i] = node
	s.t.Logf("%s recreated on %s: %s -> %s", pod, s.c.Nodes[node].Name, old, sb.IPs[0])
	s.expectNoLeak("the new "+pod+" from the moment its sandbox is up", want)
	if _, err := s.waitRunning(ctx, sb, node); err != nil {
		s.t.Fatal(err)
	}
}

func podIndex(pod string) int {
	for i, p := range confPods {
		if p == pod {
			return i
		}
	}
	panic("no conformance pod " + pod)
}

// host is the pod's address as a /32 (or /128) CIDR.
func (s *step) host(pod string) string {
	a := s.p.sandboxes()[podIndex(pod)].IPs[0]
	return netip.PrefixFrom(a, a.BitLen()).String()
}

func (s *step) podCIDR(node int) string { return s.c.Nodes[node].PodCIDR }

// podsOn lists the pods on node as a truth pattern ("x/b,y/a,...").
func (s *step) podsOn(node int) string {
	var on []string
	for i, p := range confPods {
		if s.node[i] == node {
			on = append(on, p)
		}
	}
	return strings.Join(on, ",")
}

// expect waits until the matrix is want. Want must differ from the matrix
// of the step before: otherwise a round could agree before nodenet saw the
// change at all, and the step could not fail.
func (s *step) expect(what string, want *truth) {
	s.t.Helper()
	if want.equal(s.last) {
		s.t.Fatalf("case bug: %q expects the matrix of the step before; it would pass before nodenet reacts", what)
	}
	s.check(s.t, what, want)
}

// expectUnchanged is expect for a change that must leave the matrix as it
// was; why says what makes a wrong reaction visible anyway.
func (s *step) expectUnchanged(what, why string, want *truth) {
	s.t.Helper()
	s.t.Logf("%s: unchanged matrix, observable because %s", what, why)
	s.check(s.t, what, want)
}

// expectNoLeak is one round, no waiting: nothing want blocks may get
// through (entries want allows may still be converging). A leak fails the
// case but lets it go on.
func (s *step) expectNoLeak(what string, want *truth) {
	s.t.Helper()
	got, _, err := s.p.round(context.Background(), want, false)
	if err != nil {
		s.t.Fatalf("%s: %v", what, err)
	}
	var leaks []string
	for i := range nPods {
		for j := range nPods {
			for k := range nServices {
				if got[i][j][k] && !want.want(i, j, k) {
					leaks = append(leaks, fmt.Sprintf("%s -> %s %s", confPods[i], confPods[j], confServices[k]))
				}
			}
		}
	}
	if len(leaks) > 0 {
		render, _ := renderDiff(want, &got)
		s.t.Errorf("%s: %d connections that must be blocked got through (+): %s\n%s", what, len(leaks), strings.Join(leaks, ", "), render)
	}
}

// expectNodesReachPods: every node reaches its own pods matching pattern
// on every service, whatever the policies (the kubelet's probes come from
// there). One try each: the rules have converged already.
func (s *step) expectNodesReachPods(pattern string) {
	s.t.Helper()
	sbs := s.p.sandboxes()
	for _, i := range matching(pattern, confPods) {
		n := s.c.Nodes[s.node[i]]
		for _, svc := range confServices {
			ok, err := s.p.probe(context.Background(), n.NS, sbs[i], svc, allowedTimeout)
			if err != nil || !ok {
				s.t.Errorf("node %s does not reach its pod %s on %s (err %v)", n.Name, confPods[i], svc, err)
			}
		}
	}
}

// check waits until a round agrees with want, then requires the next full
// round to agree as well: a state the rules only pass through is no pass.
// On failure it prints the last full round against want.
func (w *confWorld) check(t *testing.T, what string, want *truth) {
	t.Helper()
	start := time.Now()
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, convergeWithin, true, func(ctx context.Context) (bool, error) {
		_, bad, err := w.p.round(ctx, want, true)
		return err == nil && bad == 0, err
	})
	took := time.Since(start)
	if err == nil {
		w.converged = append(w.converged, took)
	}
	got, bad, rerr := w.p.round(context.Background(), want, false)
	render, _ := renderDiff(want, &got)
	switch {
	case rerr != nil:
		t.Fatalf("%s: probing failed: %v", what, rerr)
	case err != nil:
		t.Fatalf("%s: the matrix did not agree within %s (%v); last round, %d wrong (+ got through but must be blocked, - blocked but must get through):\n%s",
			what, convergeWithin, err, bad, render)
	case bad > 0:
		t.Fatalf("%s: agreed after %s, then the next round had %d wrong (+ got through but must be blocked, - blocked but must get through):\n%s",
			what, took.Round(time.Millisecond), bad, render)
	}
	w.last = want.clone()
	t.Logf("%s: agreed after %s", what, took.Round(time.Millisecond))
}
