package ingress

import (
	"bytes"
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
)

// testEndpointRemoval: under continuous load (keep-alive and new
// connections), an endpoint leaves the Service while its pod still serves,
// and another endpoint's server exits while still listed (connections
// refused: retried elsewhere). No request may fail.
func testEndpointRemoval(t *testing.T, w *world) {
	ctx := context.Background()
	a := w.c.Nodes[0]
	pods := []string{"drain-1", "drain-2", "drain-3"}
	for i, n := range []int{0, 1, 0} {
		w.startBackend(t, pods[i], "drain", w.c.Nodes[n])
	}
	w.service(t, "drain", "drain")
	w.waitEndpoints(t, "drain", 3)
	createIngress(t, newIngress("drain", rule("drain.test", prefix("/", "drain"))))
	probe := w.newClient(a, clientOpts{keepAlive: true})
	defer probe.close()
	for _, p := range pods {
		probe.servedBy(t, get("http://drain.test/"), p)
	}
	l := w.startLoad(loadOpts{url: "http://drain.test/", accept: pods, workers: 4, node: a})
	defer l.stop(t, "endpoint removal")
	l.waitMore(t, 200)

	// drain-1 leaves the Service (relabelled); it keeps serving, so
	// requests already routed to it still succeed.
	patch := []byte(`{"metadata":{"labels":{"app":"drained"}}}`)
	if _, err := suite.CP.Client.CoreV1().Pods(testNS).Patch(ctx, "drain-1", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	w.waitEndpoints(t, "drain", 2)
	notDrained := func(r result) bool { return r.err == nil && r.code == 200 && r.pod() != "drain-1" }
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		for range 20 {
			if !notDrained(probe.do(get("http://drain.test/"))) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatal("drain-1 still gets requests after leaving the Service")
	}
	l.waitMore(t, 200)
	w.pods["drain-1"].echo.Close()

	// drain-3's server exits but the pod stays Ready: every new connection
	// to it is refused and must be retried on drain-2.
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if err := w.pods["drain-3"].echo.Shutdown(sctx); err != nil {
		t.Errorf("drain-3 graceful shutdown: %v", err)
	}
	cancel()
	l.waitMore(t, 300)
	for range 20 {
		probe.once(t, "after drain-3's server exited", get("http://drain.test/"), is(http.StatusOK, "drain-2"))
	}
}

// testUpdatesUnderLoad: 50 updates of one Ingress, each switching its
// backend between two Services and waited for, plus a SIGHUP to the daemon,
// under continuous load: no request may fail.
func testUpdatesUnderLoad(t *testing.T, w *world) {
	ctx := context.Background()
	a := w.c.Nodes[0]
	createIngress(t, newIngress("churn", rule("churn.test", prefix("/", "web"), prefix("/api", "api"))))
	probe := w.newClient(a, clientOpts{keepAlive: true})
	defer probe.close()
	probe.servedBy(t, get("http://churn.test/"), web...)
	accept := append(slices.Clone(web), api...)
	l := w.startLoad(loadOpts{url: "http://churn.test/", accept: accept, workers: 4, node: a})
	defer l.stop(t, "50 Ingress updates")
	l.waitMore(t, 100)
	ings := suite.CP.Client.NetworkingV1().Ingresses(testNS)
	start := time.Now()
	for i := range 50 {
		svc, want := "api", api
		if i%2 == 1 {
			svc, want = "web", web
		}
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			ing, err := ings.Get(ctx, "churn", metav1.GetOptions{})
			if err != nil {
				return err
			}
			ing.Spec.Rules[0].HTTP.Paths[0].Backend.Service.Name = svc
			if ing.Annotations == nil {
				ing.Annotations = map[string]string{}
			}
			ing.Annotations["test/update"] = strings.Repeat("x", i%5)
			_, err = ings.Update(ctx, ing, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			t.Fatalf("update %d: %v", i, err)
		}
		probe.servedBy(t, get("http://churn.test/"), want...)
		if i == 25 {
			if err := a.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("50 updates applied and observed in %s", time.Since(start).Round(time.Millisecond))
	l.waitMore(t, 100)
	if a.Daemon.Exited() {
		t.Fatalf("daemon exited: %v", a.Daemon.ExitErr())
	}
}

// testStatus: the leader writes the serving nodes' addresses into served
// Ingresses only; metrics, access log and `nodenet status` show the ingress.
func testStatus(t *testing.T, w *world) {
	ctx := context.Background()
	a, b := w.c.Nodes[0], w.c.Nodes[1]
	// The addresses are the Ready nodes' InternalIPs: say Ready, as a
	// kubelet would (the stand-in reports pods only).
	for _, n := range w.c.Nodes {
		markReady(t, n.Name)
	}
	createIngress(t, newIngress("status-other", class("other"), rule("status-other.test", prefix("/", "web"))))
	createIngress(t, newIngress("status", rule("status.test", prefix("/", "web"))))
	ings := suite.CP.Client.NetworkingV1().Ingresses(testNS)
	want := []string{a.IP.String(), b.IP.String()}
	slices.Sort(want)
	var got []string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		ing, err := ings.Get(ctx, "status", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		got = nil
		for _, lb := range ing.Status.LoadBalancer.Ingress {
			got = append(got, lb.IP)
		}
		slices.Sort(got)
		return slices.Equal(got, want), nil
	})
	if err != nil {
		t.Errorf("status.loadBalancer.ingress %v, want the nodes' addresses %v", got, want)
	}
	if other, err := ings.Get(ctx, "status-other", metav1.GetOptions{}); err != nil || len(other.Status.LoadBalancer.Ingress) > 0 {
		t.Errorf("another class's Ingress got a status: %+v (%v)", other.Status.LoadBalancer, err)
	}
	lease, err := suite.CP.Client.CoordinationV1().Leases("kube-system").Get(ctx, "nodenet-ingress-status", metav1.GetOptions{})
	if err != nil {
		t.Errorf("status lease: %v", err)
	} else if h := lease.Spec.HolderIdentity; h == nil || !strings.Contains(*h, a.Name) && !strings.Contains(*h, b.Name) {
		t.Errorf("status lease held by %v, want a node", h)
	} else {
		t.Logf("status lease held by %s", *h)
	}

	c := w.newClient(a, clientOpts{})
	c.servedBy(t, get("http://status.test/access-log-probe"), web...)
	if err := a.WaitLog(ctx, "/access-log-probe", 10*time.Second); err != nil {
		t.Errorf("access log: %v", err)
	}
	code, metrics, err := a.Admin("/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("metrics: %d %v", code, err)
	}
	for _, m := range []string{"nodenet_ingress_requests_total{", "nodenet_ingress_request_duration_seconds_bucket{",
		"nodenet_ingress_upstream_duration_seconds_bucket{", "nodenet_ingress_active_connections"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("metrics lack %s", m)
		}
	}
	var sample string
	for line := range strings.SplitSeq(metrics, "\n") {
		if strings.HasPrefix(line, "nodenet_ingress_requests_total{") && strings.Contains(line, `"ing/status"`) && strings.Contains(line, `code="200"`) {
			sample = line
		}
	}
	if sample == "" {
		t.Errorf("no nodenet_ingress_requests_total sample for ingress ing/status, code 200")
	}
	out, err := a.StatusText(ctx)
	if err != nil || !strings.Contains(out, "ingress") {
		t.Errorf("nodenet status does not show the ingress (%v):\n%s", err, out)
	}
}

// markReady sets the Node's Ready condition, as its kubelet's heartbeat
// does.
func markReady(t *testing.T, name string) {
	t.Helper()
	ctx := context.Background()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := suite.CP.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		node.Status.Conditions = append(slices.DeleteFunc(node.Status.Conditions, func(c corev1.NodeCondition) bool { return c.Type == corev1.NodeReady }),
			corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now})
		_, err = suite.CP.Client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("mark node %s Ready: %v", name, err)
	}
}

// testConfigReload: a changed [ingress] section applies on SIGHUP under
// load without a failed request, and a listener moves live.
func testConfigReload(t *testing.T, w *world) {
	a := w.c.Nodes[0]
	orig, err := os.ReadFile(a.Config)
	if err != nil {
		t.Fatal(err)
	}
	reload := func(ingressKeys string) {
		t.Helper()
		cfg := strings.Replace(string(orig), "[ingress]\n", "[ingress]\n"+ingressKeys, 1)
		if err := a.WriteConfig(cfg); err != nil {
			t.Fatal(err)
		}
		if err := a.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if err := a.WriteConfig(string(orig)); err == nil {
			_ = a.Signal(syscall.SIGHUP)
		}
	})
	createIngress(t, newIngress("reload", rule("reload.test", prefix("/", "web"))))
	c := w.newClient(a, clientOpts{})
	c.servedBy(t, get("http://reload.test/"), web...)
	const size = 1536 << 10 // over the default max_body_size (1m)
	post := func() request {
		return request{method: "POST", url: "http://reload.test/", body: bytes.NewReader(make([]byte, size)), length: size}
	}
	c.once(t, "1.5 MiB over the default limit", post(), is(http.StatusRequestEntityTooLarge))

	l := w.startLoad(loadOpts{url: "http://reload.test/", accept: web, workers: 4, node: a})
	defer l.stop(t, "config reload")
	l.waitMore(t, 100)
	reload("max_body_size = \"2m\"\n")
	c.eventually(t, "max_body_size 2m after SIGHUP", post(), is(http.StatusOK, web...))
	l.waitMore(t, 100)
	l.stop(t, "config reload")

	// The HTTPS listener moves from :443 to :8443.
	reload("https_listen = \":8443\"\n")
	err = wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn, err := w.dialer(a)(ctx, "tcp", "x:8443")
		if err != nil {
			return false, nil
		}
		conn.Close()
		conn, err = w.dialer(a)(ctx, "tcp", "x:443")
		if err == nil {
			conn.Close()
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		t.Fatal("after SIGHUP the HTTPS listener did not move from :443 to :8443")
	}
	tc := w.newClient(a, clientOpts{tls: &tls.Config{InsecureSkipVerify: true}})
	tc.once(t, "HTTPS on the new port", get("https://reload.test:8443/"), is(http.StatusOK, web...))
}
