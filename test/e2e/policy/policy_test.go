// Package policy tests NetworkPolicy enforcement end to end: policies from
// the real control plane, pods on two nodes, reachability checked by
// connecting.
package policy

import (
	"context"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodenet/nodenet/daemon/control"
	"github.com/nodenet/nodenet/test/harness"
)

var suite harness.Suite

func TestMain(m *testing.M) { os.Exit(harness.RunSuite(m, harness.Options{}, &suite)) }

const port = 8080

// pods are x/a (node 1), x/b (node 2), y/c (node 1).
var order = []string{"x/a", "x/b", "y/c"}

type world struct {
	t    *testing.T
	c    *harness.Cluster
	pods map[string]*harness.Sandbox
}

// reach reports whether from can open a TCP connection to to. Denied
// packets are dropped, so a denial is a timeout; allowed connections on
// these namespaces complete in well under the timeout.
func (w *world) reach(from, to string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	conn, err := w.pods[from].NS.DialContext(ctx, "tcp", net.JoinHostPort(w.pods[to].IPs[0].String(), strconv.Itoa(port)))
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// matrix renders reachability as rows "from: to to to" with X = reachable.
func (w *world) matrix() string {
	var b strings.Builder
	for _, from := range order {
		b.WriteString(from + ":")
		for _, to := range order {
			mark := "."
			if from == to || w.reach(from, to) {
				mark = "X"
			}
			b.WriteString(mark)
		}
		b.WriteString(" ")
	}
	return strings.TrimSpace(b.String())
}

// expect polls until the matrix equals want (rules apply asynchronously).
func (w *world) expect(what, want string) {
	w.t.Helper()
	var got string
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		got = w.matrix()
		return got == want, nil
	})
	if err != nil {
		w.t.Fatalf("%s: reachability %q, want %q", what, got, want)
	}
}

func (w *world) apply(np *networkingv1.NetworkPolicy) {
	w.t.Helper()
	if _, err := suite.CP.Client.NetworkingV1().NetworkPolicies(np.Namespace).Create(context.Background(), np, metav1.CreateOptions{}); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) remove(ns, name string) {
	w.t.Helper()
	if err := suite.CP.Client.NetworkingV1().NetworkPolicies(ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		w.t.Fatal(err)
	}
}

func TestNetworkPolicy(t *testing.T) {
	suite.Require(t)
	ctx := context.Background()
	c := suite.StartCluster(t, "np", 2, nil)
	w := &world{t: t, c: c, pods: map[string]*harness.Sandbox{}}
	for _, ns := range []string{"x", "y"} {
		if _, err := suite.CP.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
			ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"ns": ns}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = suite.CP.Client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
		})
	}
	for i, key := range order {
		ns, name, _ := strings.Cut(key, "/")
		node := c.Nodes[[]int{0, 1, 0}[i]].Name
		pod := harness.EchoPod(ns, name, node, map[string]string{"pod": name}, port, port+1)
		if _, err := suite.CP.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		sb, err := c.Kubelets[node].WaitRunning(ctx, ns, name)
		if err != nil {
			t.Fatal(err)
		}
		w.pods[key] = sb
	}

	w.expect("no policies: everything reaches everything", "x/a:XXX x/b:XXX y/c:XXX")

	w.apply(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "deny", Namespace: "x"},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}})
	w.expect("default-deny ingress in x", "x/a:X.X x/b:.XX y/c:..X")

	// The node itself still reaches its pods (kubelet probes).
	n1 := c.Nodes[0]
	// Status lists the isolated local pods and the policies behind them.
	var st control.Status
	if err := n1.Status(ctx, &st); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(st.Components, func(c control.ComponentStatus) bool {
		return c.Name == "policy" && c.Details["isolated x/a"] == "ingress by x/deny" && c.Details["isolated pods on this node"] == "1"
	}) {
		t.Errorf("status does not show x/a isolated by x/deny: %+v", st.Components)
	}
	conn, err := n1.NS.DialContext(ctx, "tcp", net.JoinHostPort(w.pods["x/a"].IPs[0].String(), strconv.Itoa(port)))
	if err != nil {
		t.Errorf("node %s cannot reach its isolated pod x/a: %v", n1.Name, err)
	} else {
		conn.Close()
	}

	w.apply(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "from-y", Namespace: "x"},
		Spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"ns": "y"}}}},
		}}}})
	w.expect("plus allow from namespace y", "x/a:X.X x/b:.XX y/c:XXX")
	// The diagnosis command answers from the same model, naming the policy.
	explain := func(from, to string) string {
		out, err := exec.Command(suite.Nodenet, "explain", w.pods[from].IPs[0].String(), w.pods[to].IPs[0].String(),
			"--port", strconv.Itoa(port), "--socket", n1.Socket).CombinedOutput()
		if err != nil {
			t.Fatalf("nodenet explain: %v\n%s", err, out)
		}
		return string(out)
	}
	if out := explain("y/c", "x/a"); !strings.Contains(out, "ALLOWED") || !strings.Contains(out, "allowed by x/from-y") {
		t.Errorf("explain y/c -> x/a:\n%s", out)
	}
	if out := explain("x/b", "x/a"); !strings.Contains(out, "DENIED") || !strings.Contains(out, "isolated, no policy allows it") {
		t.Errorf("explain x/b -> x/a:\n%s", out)
	}

	w.apply(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "from-clients", Namespace: "x"},
		Spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}}}},
		}}}})
	w.expect("a pod selector nobody matches yet changes nothing", "x/a:X.X x/b:.XX y/c:XXX")
	if _, err := suite.CP.Client.CoreV1().Pods("x").Patch(ctx, "b", "application/merge-patch+json",
		[]byte(`{"metadata":{"labels":{"role":"client"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	w.expect("x/b labelled role=client reaches x/a (live label change)", "x/a:X.X x/b:XXX y/c:XXX")

	w.apply(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "no-egress", Namespace: "y"},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}}})
	w.expect("egress deny in y: y/c reaches nobody, replies to others still pass", "x/a:X.X x/b:XXX y/c:..X")

	for _, np := range [][2]string{{"x", "deny"}, {"x", "from-y"}, {"x", "from-clients"}, {"y", "no-egress"}} {
		w.remove(np[0], np[1])
	}
	w.expect("all policies deleted", "x/a:XXX x/b:XXX y/c:XXX")

	if err := n1.Status(ctx, &st); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(st.Components, func(c control.ComponentStatus) bool {
		return c.Name == "policy" && c.Details["policies"] == "0" && c.LastError == ""
	}) {
		t.Errorf("status lacks a healthy policy component: %+v", st.Components)
	}
}

// TestRestartStaysClosed: with a default-deny policy in force, nodenet is
// killed with SIGKILL and restarted on every node while a forbidden
// connection is attempted continuously; not one may succeed. The rules
// outlive the process and a restarted daemon replaces them atomically.
func TestRestartStaysClosed(t *testing.T) {
	suite.Require(t)
	ctx := context.Background()
	c := suite.StartCluster(t, "rs", 2, nil)
	w := &world{t: t, c: c, pods: map[string]*harness.Sandbox{}}
	if _, err := suite.CP.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: "rs", Labels: map[string]string{"ns": "rs"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = suite.CP.Client.CoreV1().Namespaces().Delete(context.Background(), "rs", metav1.DeleteOptions{})
	})
	for i, name := range []string{"server", "client"} {
		node := c.Nodes[i].Name
		pod := harness.EchoPod("rs", name, node, map[string]string{"pod": name}, port, port+1)
		if _, err := suite.CP.Client.CoreV1().Pods("rs").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		sb, err := c.Kubelets[node].WaitRunning(ctx, "rs", name)
		if err != nil {
			t.Fatal(err)
		}
		w.pods["rs/"+name] = sb
	}
	if !w.reach("rs/client", "rs/server") {
		t.Fatal("client cannot reach server before any policy")
	}
	w.apply(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "deny", Namespace: "rs"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": "server"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}})
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return !w.reach("rs/client", "rs/server"), nil
	})
	if err != nil {
		t.Fatal("default-deny never took effect")
	}

	// Eight probers, so attempts overlap every moment of the restart.
	stop := make(chan struct{})
	var attempts, leaks atomic.Int64
	var probers sync.WaitGroup
	for range 8 {
		probers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if w.reach("rs/client", "rs/server") {
					leaks.Add(1)
				}
				attempts.Add(1)
			}
		})
	}
	for _, n := range c.Nodes {
		n.Daemon.Kill()
		if err := n.Start(suite.Nodenet); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range c.Nodes {
		if err := n.WaitReady(ctx, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	// And on for a while after the restarted daemons have synced.
	after := attempts.Load() + 16
	err = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return attempts.Load() >= after, nil
	})
	close(stop)
	probers.Wait()
	if err != nil {
		t.Fatal("probing stalled")
	}
	t.Logf("%d forbidden connection attempts across the kill and restart of both daemons, %d succeeded", attempts.Load(), leaks.Load())
	if leaks.Load() > 0 {
		t.Errorf("%d of %d forbidden connections succeeded", leaks.Load(), attempts.Load())
	}
}
