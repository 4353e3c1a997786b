package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodenet/nodenet/daemon/control"
	"github.com/nodenet/nodenet/daemon/view"
	"github.com/nodenet/nodenet/test/harness"
)

func TestBinaryIsStatic(t *testing.T) {
	requireCluster(t)
	out, err := exec.Command("file", suite.Nodenet).CombinedOutput()
	if err != nil {
		t.Fatalf("file: %v %s", err, out)
	}
	if !strings.Contains(string(out), "statically linked") {
		t.Errorf("nodenet is not statically linked: %s", out)
	}
	// ldd exits non-zero for a static binary.
	if out, err := exec.Command("ldd", suite.Nodenet).CombinedOutput(); err == nil {
		t.Errorf("ldd found dynamic dependencies: %s", out)
	}
}

// status fetches the daemon status as an operator would.
func status(t *testing.T, n *harness.Node) *control.Status {
	t.Helper()
	var st control.Status
	if err := n.Status(context.Background(), &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

func objects(st *control.Status, kind view.Kind) int {
	for _, k := range st.Informers {
		if k.Kind == kind {
			return k.Objects
		}
	}
	return -1
}

// waitStatus polls status until cond holds.
func waitStatus(t *testing.T, n *harness.Node, what string, cond func(*control.Status) bool) *control.Status {
	t.Helper()
	var last *control.Status
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		var st control.Status
		if err := n.Status(ctx, &st); err != nil {
			return false, nil
		}
		last = &st
		return cond(&st), nil
	})
	if err != nil {
		t.Fatalf("status never showed %s; last status: %+v", what, last)
	}
	return last
}

// createObjects makes one object of every watched kind in a fresh namespace,
// plus an Opaque secret that nodenet must not cache.
func createObjects(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	c := suite.CP.Client
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))
	t.Cleanup(func() {
		_ = c.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
	must(c.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{}))
	must(c.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "none"}}},
	}, metav1.CreateOptions{}))
	must(c.NetworkingV1().NetworkPolicies(ns).Create(ctx, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "deny"},
	}, metav1.CreateOptions{}))
	must(c.NetworkingV1().Ingresses(ns).Create(ctx, &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: networkingv1.IngressSpec{DefaultBackend: &networkingv1.IngressBackend{
			Service: &networkingv1.IngressServiceBackend{Name: "web", Port: networkingv1.ServiceBackendPort{Number: 80}}}},
	}, metav1.CreateOptions{}))
	must(c.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "tls"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": []byte("x"), "tls.key": []byte("y")},
	}, metav1.CreateOptions{}))
	must(c.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "opaque"}, StringData: map[string]string{"k": "v"},
	}, metav1.CreateOptions{}))
}

// apiCounts counts, as admin, what the daemon should have in its caches.
func apiCounts(t *testing.T) map[view.Kind]int {
	t.Helper()
	ctx := context.Background()
	c := suite.CP.Client
	out := map[view.Kind]int{}
	count := func(kind view.Kind, n int, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		out[kind] = n
	}
	nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	count(view.Nodes, len(nodes.Items), err)
	nss, err := c.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	count(view.Namespaces, len(nss.Items), err)
	pods, err := c.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	count(view.Pods, len(pods.Items), err)
	svcs, err := c.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	count(view.Services, len(svcs.Items), err)
	nps, err := c.NetworkingV1().NetworkPolicies("").List(ctx, metav1.ListOptions{})
	count(view.NetworkPolicies, len(nps.Items), err)
	ings, err := c.NetworkingV1().Ingresses("").List(ctx, metav1.ListOptions{})
	count(view.Ingresses, len(ings.Items), err)
	secrets, err := c.CoreV1().Secrets("").List(ctx, metav1.ListOptions{FieldSelector: view.TLSSecretSelector})
	count(view.Secrets, len(secrets.Items), err)
	return out
}

func countsMatch(st *control.Status, want map[view.Kind]int) bool {
	for k, n := range want {
		if objects(st, k) != n {
			return false
		}
	}
	return true
}

func TestStatusShowsObjectsCreatedBeforeAndAfterStart(t *testing.T) {
	requireCluster(t)
	createObjects(t, "before")
	n := startNode(t, "st1", "")
	want := apiCounts(t)
	if want[view.Secrets] < 1 || want[view.Pods] < 1 {
		t.Fatalf("setup: %v", want)
	}
	st := waitStatus(t, n, fmt.Sprintf("counts %v", want), func(st *control.Status) bool { return countsMatch(st, apiCounts(t)) })
	if !st.Ready || !st.API.Connected {
		t.Errorf("status: ready=%v api connected=%v", st.Ready, st.API.Connected)
	}
	for _, k := range st.Informers {
		if !k.Synced {
			t.Errorf("informer %s not synced", k.Kind)
		}
	}
	if st.Node != "st1" || st.Config.Generation != 1 || st.Config.File != n.Config {
		t.Errorf("status identity/config: node=%q generation=%d file=%q", st.Node, st.Config.Generation, st.Config.File)
	}
	var nodeComp *control.ComponentStatus
	for i := range st.Components {
		if st.Components[i].Name == "node" {
			nodeComp = &st.Components[i]
		}
	}
	if nodeComp == nil || nodeComp.LastSuccess.IsZero() || nodeComp.Details["pod CIDRs"] != n.PodCIDR || nodeComp.Details["addresses"] != n.IP.String() {
		t.Errorf("node component status: %+v (want podCIDR %s, address %s)", nodeComp, n.PodCIDR, n.IP)
	}

	createObjects(t, "after")
	waitStatus(t, n, "counts after creating more", func(st *control.Status) bool { return countsMatch(st, apiCounts(t)) })

	text, err := n.StatusText(context.Background())
	if err != nil {
		t.Fatalf("status text: %v\n%s", err, text)
	}
	for _, s := range []string{"on node st1", ": ready", "generation 1", "connected", "NetworkPolicy", "pod CIDRs:", n.PodCIDR} {
		if !strings.Contains(text, s) {
			t.Errorf("status text lacks %q:\n%s", s, text)
		}
	}
}

func TestMetricsAndHealth(t *testing.T) {
	requireCluster(t)
	n := startNode(t, "met", "")
	code, body, err := n.Admin("/metrics")
	if err != nil || code != 200 {
		t.Fatalf("/metrics: %d %v", code, err)
	}
	for _, s := range []string{
		`nodenet_informer_synced{kind="Pod"} 1`,
		`nodenet_apiserver_up 1`,
		`nodenet_ready 1`,
		`nodenet_reconcile_duration_seconds_count{component="node",kind="full"}`,
		`nodenet_config_reloads_total{result="failure"} 0`,
	} {
		if !strings.Contains(body, s) {
			t.Errorf("/metrics lacks %q", s)
		}
	}
	if code, _, err := n.Admin("/healthz"); err != nil || code != 200 {
		t.Errorf("/healthz: %d %v", code, err)
	}
	fi, err := os.Stat(n.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket mode %v, want socket 0600", fi.Mode())
	}
}

// Readiness needs synced caches and every component synced once: a node
// whose Node object is missing stays unready until it appears.
func TestReadyOnlyAfterSync(t *testing.T) {
	requireCluster(t)
	ctx := context.Background()
	n := newNode(t, "rdy")
	node, err := suite.CP.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := suite.CP.Client.CoreV1().Nodes().Delete(ctx, n.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(suite.Nodenet); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitLog(ctx, "caches synced", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitLog(ctx, `is not registered with the API server`, time.Minute); err != nil {
		t.Fatal(err)
	}
	code, body, err := n.Admin("/readyz")
	if err != nil || code != 503 || !strings.Contains(body, "component node has not synced") {
		t.Fatalf("/readyz before the node exists: %d %q %v", code, body, err)
	}
	if st := status(t, n); st.Ready {
		t.Fatalf("status says ready before the node exists")
	}
	node.ResourceVersion = ""
	if _, err := suite.CP.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitReady(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
}

func TestReloadBrokenConfigKeepsOld(t *testing.T) {
	requireCluster(t)
	ctx := context.Background()
	n := startNode(t, "rl1", "")
	good, err := os.ReadFile(n.Config)
	if err != nil {
		t.Fatal(err)
	}
	broken := strings.Replace(string(good), `min_interval = "50ms"`, `min_interval = "50ms"
bogus_key = 1`, 1)
	broken = strings.Replace(broken, `level = "debug"`, `level = "loud"`, 1)
	broken = strings.Replace(broken, `service_cidrs = [`, `mtu = 12
service_cidrs = [`, 1)
	if err := n.WriteConfig(broken); err != nil {
		t.Fatal(err)
	}
	if err := n.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"key=reconcile.bogus_key", "key=log.level", "key=network.mtu"} {
		if err := n.WaitLog(ctx, key, 30*time.Second); err != nil {
			t.Error(err)
		}
	}
	if !strings.Contains(n.Daemon.Log(), "config reload rejected; keeping the running config") {
		t.Error("log does not say the old config is kept")
	}
	st := status(t, n)
	if st.Config.Generation != 1 || !strings.Contains(st.Config.LastReloadError, "log.level") || !st.Ready {
		t.Errorf("after a broken reload: generation=%d ready=%v last error=%q", st.Config.Generation, st.Ready, st.Config.LastReloadError)
	}
	if n.Daemon.Exited() {
		t.Fatal("daemon exited on a broken reload")
	}
	code, body, err := n.Admin("/metrics")
	if err != nil || code != 200 || !strings.Contains(body, `nodenet_config_reloads_total{result="failure"} 1`) {
		t.Errorf("reload failure not counted: %v", err)
	}
}

func TestReloadValidChangeAppliesIt(t *testing.T) {
	requireCluster(t)
	ctx := context.Background()
	n := newNode(t, "rl2")
	base := strings.Replace(n.DefaultConfig(""), `level = "debug"`, `level = "info"`, 1)
	if err := n.WriteConfig(base); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(suite.Nodenet); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitReady(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(n.Daemon.Log(), "DBG") {
		t.Fatal("debug lines at level info")
	}
	next := strings.Replace(base, `level = "info"`, `level = "debug"`, 1)
	next = strings.Replace(next, `listen = "127.0.0.1:9490"`, `listen = "127.0.0.1:9491"`, 1)
	next = strings.Replace(next, `[kubernetes]`, "[kubernetes]\nqps = 7", 1)
	if err := n.WriteConfig(next); err != nil {
		t.Fatal(err)
	}
	if err := n.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitLog(ctx, "config reloaded", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	log := n.Daemon.Log()
	for _, want := range [][2]string{{"applied live", "key=log.level"}, {"applied live", "key=admin.listen"}, {"only after a restart", "key=kubernetes.qps"}} {
		if !logLine(log, want[0], want[1]) {
			t.Errorf("log has no line with %q and %q", want[0], want[1])
		}
	}
	st := status(t, n)
	if st.Config.Generation != 2 || len(st.Config.RestartRequired) != 1 || st.Config.RestartRequired[0] != "kubernetes.qps" {
		t.Errorf("status after reload: generation %d, restart required %v", st.Config.Generation, st.Config.RestartRequired)
	}
	// The level is live: a Node change now logs a debug line.
	if _, err := suite.CP.Client.CoreV1().Nodes().Patch(ctx, n.Name, "application/merge-patch+json",
		[]byte(`{"metadata":{"labels":{"touched":"yes"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitLog(ctx, "DBG", 30*time.Second); err != nil {
		t.Error(err)
	}
	// The admin listener moved.
	resp, err := n.HTTPClient().Get("http://127.0.0.1:9491/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("admin listener not on the new address: %v", err)
	} else {
		resp.Body.Close()
	}
	if _, err := n.HTTPClient().Get("http://127.0.0.1:9490/readyz"); err == nil {
		t.Errorf("admin listener still on the old address")
	}
}

func TestAPIServerOutage(t *testing.T) {
	requireCluster(t)
	ctx := context.Background()
	n := startNode(t, "out", "")
	suite.CP.StopAPIServer()
	restarted := false
	defer func() {
		if !restarted {
			if err := suite.CP.StartAPIServer(ctx); err != nil {
				t.Errorf("restart API server: %v", err)
			}
		}
	}()
	st := waitStatus(t, n, "API unreachable", func(st *control.Status) bool { return !st.API.Connected })
	if !st.Ready || n.Daemon.Exited() {
		t.Errorf("daemon must keep running and stay ready on its last state: ready=%v exited=%v", st.Ready, n.Daemon.Exited())
	}
	if st.API.LastError == "" {
		t.Error("status gives no error for the unreachable API server")
	}
	text, _ := n.StatusText(ctx)
	if !strings.Contains(text, "UNREACHABLE") {
		t.Errorf("status text does not say the API is unreachable:\n%s", text)
	}
	if code, body, _ := n.Admin("/metrics"); code != 200 || !strings.Contains(body, "nodenet_apiserver_up 0") {
		t.Error("metrics do not show the API server down")
	}
	restarted = true
	if err := suite.CP.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, n, "API reconnected", func(st *control.Status) bool { return st.API.Connected })
	// It resyncs: an object created after the outage shows up.
	if _, err := suite.CP.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "after-outage"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = suite.CP.Client.CoreV1().Namespaces().Delete(ctx, "after-outage", metav1.DeleteOptions{}) })
	// The API's counts are read on every poll: namespaces of earlier
	// tests may still be terminating, and leave while we wait.
	waitStatus(t, n, "objects after the outage", func(st *control.Status) bool { return countsMatch(st, apiCounts(t)) })
}

func TestGracefulStop(t *testing.T) {
	requireCluster(t)
	n := startNode(t, "stp", "")
	start := time.Now()
	if err := n.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n.Daemon.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("daemon did not stop within 20s of SIGTERM")
	}
	if err := n.Daemon.ExitErr(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	t.Logf("stopped in %s", time.Since(start))
	if _, err := os.Stat(n.Socket); !os.IsNotExist(err) {
		t.Errorf("control socket left behind: %v", err)
	}
	if _, err := exec.Command(suite.Nodenet, "status", "--socket", n.Socket).CombinedOutput(); err == nil {
		t.Error("status succeeded with the daemon stopped")
	}
}

// logLine reports whether one line of log contains every part.
func logLine(log string, parts ...string) bool {
	for _, l := range strings.Split(log, "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			return true
		}
	}
	return false
}
