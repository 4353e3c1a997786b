package controller

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/nodenet/nodenet/daemon/config"
	"github.com/nodenet/nodenet/daemon/view"
	"github.com/nodenet/nodenet/ingress/routes"
)

// start runs a view over a fake clientset holding objs and the component
// on loopback listeners; a unit test of the wiring, no kernel needed.
func start(t *testing.T, objs ...runtime.Object) (*Component, *fake.Clientset) {
	t.Helper()
	client := fake.NewClientset(objs...)
	log := slog.New(slog.DiscardHandler)
	v := view.New(client, 0, view.NewHealth("fake", func(bool) {}), log)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	v.Start(ctx)
	if !v.WaitForSync(ctx) {
		t.Fatal("caches did not sync")
	}
	cfg := config.Defaults().Ingress
	cfg.HTTPListen, cfg.HTTPSListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.AccessLog = false
	c, err := New(v, Options{Node: "n1", Config: cfg, Client: client, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.Close(ctx)
	})
	return c, client
}

func objects(t *testing.T, backend string) []runtime.Object {
	ap := netip.MustParseAddrPort(backend)
	pt := networkingv1.PathTypePrefix
	return []runtime.Object{
		&networkingv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: "nodenet"}, Spec: networkingv1.IngressClassSpec{Controller: routes.Controller}},
		&networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web", CreationTimestamp: metav1.Now(),
			Annotations: map[string]string{"nginx.ingress.kubernetes.io/server-snippet": "evil"}},
			Spec: networkingv1.IngressSpec{IngressClassName: ptr.To("nodenet"), Rules: []networkingv1.IngressRule{{Host: "a.test",
				IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{{
					Path: "/", PathType: &pt, Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "web",
						Port: networkingv1.ServiceBackendPort{Name: "http"}}}}}}}}}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}},
		&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			Ports:     []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(ap.Port())), Protocol: ptr.To(corev1.ProtocolTCP)}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{ap.Addr().String()}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.1"}, {Type: corev1.NodeHostName, Address: "n1"}}}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2"}, Status: corev1.NodeStatus{
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionFalse}},
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.2"}}}},
	}
}

func get(t *testing.T, url, host string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestSyncServesAndReports(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "backend") }))
	defer be.Close()
	c, client := start(t, objects(t, be.Listener.Addr().String())...)
	if h, s := c.Addrs(); h != "" || s != "" {
		t.Fatalf("listening before the first sync: %q %q", h, s)
	}
	if err := c.Sync(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	// Not the leader during that sync: becoming one reports at once.
	c.events.setLeader(true)
	h, s := c.Addrs()
	if code, body := get(t, "http://"+h+"/x", "a.test"); code != 200 || body != "backend" {
		t.Errorf("GET a.test: %d %q", code, body)
	}
	if code, _ := get(t, "http://"+h+"/x", "b.test"); code != 404 {
		t.Errorf("GET b.test: %d, want 404", code)
	}
	d := c.Details()
	if d["ingresses"] != "1" || d["routes"] != "1" || !strings.Contains(d["listeners"], "https "+s) || d["problems"] != "1" {
		t.Errorf("Details = %v", d)
	}

	// The snippet annotation becomes a Warning Event, sent once.
	var events []corev1.Event
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 5*time.Second, true, func(ctx context.Context) (bool, error) {
		l, err := client.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		events = l.Items
		return len(events) > 0, nil
	})
	if err != nil || events[0].Type != corev1.EventTypeWarning || events[0].InvolvedObject.Name != "web" || !strings.Contains(events[0].Message, "server-snippet") {
		t.Fatalf("events = %+v, %v", events, err)
	}

	// Status: the InternalIPs of the Ready nodes.
	if err := c.status.writeAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	ing, err := client.NetworkingV1().Ingresses("default").Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if lb := ing.Status.LoadBalancer.Ingress; len(lb) != 1 || lb[0].IP != "192.0.2.1" {
		t.Errorf("status = %+v, want 192.0.2.1 only", lb)
	}
}

func TestReconfigure(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "backend") }))
	defer be.Close()
	c, _ := start(t, objects(t, be.Listener.Addr().String())...)
	if err := c.Sync(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	old, _ := c.Addrs()
	cfg := config.Defaults()
	cfg.Ingress.HTTPListen, cfg.Ingress.HTTPSListen = "127.0.0.2:0", ""
	if err := c.Reconfigure(&cfg); err != nil {
		t.Fatal(err)
	}
	h, s := c.Addrs()
	if h == old || s != "" {
		t.Fatalf("after reconfigure: %q %q (was %q)", h, s, old)
	}
	if code, _ := get(t, "http://"+h+"/", "a.test"); code != 200 {
		t.Errorf("new address: %d", code)
	}
	cfg.Ingress.Enabled = false
	if err := c.Reconfigure(&cfg); err != nil {
		t.Fatal(err)
	}
	if h, s := c.Addrs(); h != "" || s != "" {
		t.Errorf("disabled but listening on %q %q", h, s)
	}
	if err := c.Sync(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if c.Details()["ingresses"] != "0" {
		t.Errorf("disabled but serving: %v", c.Details())
	}
}

func TestReadyNodeIPs(t *testing.T) {
	node := func(ready corev1.ConditionStatus, addrs ...string) *corev1.Node {
		n := &corev1.Node{Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready}}}}
		for _, a := range addrs {
			n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
		}
		return n
	}
	got := ReadyNodeIPs([]*corev1.Node{node("True", "10.0.0.2", "fd00::2"), node("False", "10.0.0.3"), node("True", "10.0.0.1"), node("Unknown", "10.0.0.4")})
	want := []string{"10.0.0.1", "10.0.0.2", "fd00::2"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("ReadyNodeIPs = %v, want %v", got, want)
	}
}

// TestElection: the elected node writes status; a node whose ingress is
// disabled leaves the election and releases the Lease.
func TestElection(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer be.Close()
	c, client := start(t, objects(t, be.Listener.Addr().String())...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := c.Sync(ctx, true); err != nil {
		t.Fatal(err)
	}
	poll := func(what string, cond func(ctx context.Context) bool) {
		t.Helper()
		if err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
			return cond(ctx), nil
		}); err != nil {
			t.Fatalf("%s: %v (status: %s)", what, err, c.Details()["status"])
		}
	}
	poll("status written by the leader", func(ctx context.Context) bool {
		ing, err := client.NetworkingV1().Ingresses("default").Get(ctx, "web", metav1.GetOptions{})
		return err == nil && len(ing.Status.LoadBalancer.Ingress) == 1
	})
	lease, err := client.CoordinationV1().Leases(LeaseNamespace).Get(ctx, LeaseName, metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != "n1" {
		t.Fatalf("lease = %+v, %v", lease, err)
	}
	cfg := config.Defaults()
	cfg.Ingress.Enabled = false
	if err := c.Reconfigure(&cfg); err != nil {
		t.Fatal(err)
	}
	poll("lease released", func(ctx context.Context) bool {
		l, err := client.CoordinationV1().Leases(LeaseNamespace).Get(ctx, LeaseName, metav1.GetOptions{})
		return err == nil && (l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "")
	})
	if got := c.Details()["status"]; got != "not electing (ingress disabled)" {
		t.Errorf("status = %q", got)
	}
}
