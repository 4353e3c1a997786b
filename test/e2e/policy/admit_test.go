package policy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodenet/nodenet/test/harness"
)

// TestPolicyBeforeReady: a pod that a NetworkPolicy isolates is isolated
// the moment its CNI ADD returns, before the kubelet has reported its IP
// (and so before anything but the ADD path could have told nodenet). The
// probe runs from the runtime's point of view, before the workload
// listens: a refused connection means the packet reached the pod (not
// isolated), a timeout means it was dropped.
func TestPolicyBeforeReady(t *testing.T) {
	suite.Require(t)
	ctx := context.Background()
	c := suite.StartCluster(t, "adm", 1, nil)
	node := c.Nodes[0].Name
	kl := c.Kubelets[node]
	const ns = "adm"
	if _, err := suite.CP.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = suite.CP.Client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
	if _, err := suite.CP.Client.NetworkingV1().NetworkPolicies(ns).Create(ctx, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "guard", Namespace: ns},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "guarded"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	client := harness.EchoPod(ns, "client", node, map[string]string{"app": "client"}, port, port+1)
	if _, err := suite.CP.Client.CoreV1().Pods(ns).Create(ctx, client, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	from, err := kl.WaitRunning(ctx, ns, "client")
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	probed := map[string]error{}
	kl.SetAfterAdd(func(namespace, name string, ips []netip.Addr) {
		if namespace != ns || name == "client" {
			return
		}
		pctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		conn, err := from.NS.DialContext(pctx, "tcp", net.JoinHostPort(ips[0].String(), strconv.Itoa(port)))
		if err == nil {
			conn.Close()
			err = errors.New("connected")
		}
		mu.Lock()
		probed[name] = err
		mu.Unlock()
	})
	t.Cleanup(func() { kl.SetAfterAdd(nil) })

	// "open" is the control: no policy selects it, so the probe must be
	// refused (nothing listens yet), which shows the probe tells the two
	// apart.
	for _, p := range []struct{ name, app string }{{"guarded", "guarded"}, {"open", "open"}} {
		if _, err := suite.CP.Client.CoreV1().Pods(ns).Create(ctx, harness.EchoPod(ns, p.name, node,
			map[string]string{"app": p.app}, port, port+1), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := kl.WaitRunning(ctx, ns, p.name); err != nil {
			t.Fatal(err)
		}
	}
	var results map[string]error
	if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		results = map[string]error{}
		for k, v := range probed {
			results[k] = v
		}
		return len(results) == 2, nil
	}); err != nil {
		t.Fatalf("probes after ADD: %v", results)
	}
	if err := results["open"]; !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("probe of the unselected pod right after its ADD: %v, want connection refused", err)
	}
	if err := results["guarded"]; !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
		t.Errorf("probe of the isolated pod right after its ADD: %v, want a timeout (dropped): the pod was reachable before its policy was enforced", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
