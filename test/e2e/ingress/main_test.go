// Package ingress tests the Ingress proxy end to end: Ingresses, Services,
// Secrets and IngressClasses on the real control plane, backends as pods on
// two nodes (HTTP, h2c, TLS, WebSocket and gRPC echo servers inside the pod
// namespaces), requests from a host on the underlay to a node's ports 80
// and 443.
package ingress

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodenet/nodenet/test/harness"
)

var suite harness.Suite

func TestMain(m *testing.M) { os.Exit(harness.RunSuite(m, harness.Options{}, &suite)) }

const (
	controller = "nodenet.io/ingress" // the IngressClass controller nodenet serves
	className  = "nodenet"
	testNS     = "ing"
	nginx      = "nginx.ingress.kubernetes.io/" // annotation prefix
	defaultCN  = "default.ingress.test"         // node a's configured default certificate
	httpPort   = 8080                           // echo: HTTP/1.1 and h2c
	tlsPort    = 8443                           // echo: TLS (h1, h2)
)

// world is the cluster every subtest shares: two nodes, a client host on
// the underlay, backend pods and their Services in namespace testNS.
type world struct {
	c      *harness.Cluster
	client *harness.Host
	ca     *harness.TestCA // issues the Ingress TLS certificates; the client trusts it
	pods   map[string]*backend
}

// backend is a pod with its echo servers.
type backend struct {
	name string
	node *harness.Node
	sb   *harness.Sandbox
	echo *harness.HTTPEcho
}

// startWorld brings up the cluster: node a serves a configured default
// certificate, node b a self-signed one.
func startWorld(t *testing.T) *world {
	ca, err := harness.NewTestCA("ingress-test-ca")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(defaultCN)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "default.crt"), filepath.Join(dir, "default.key")
	if err := os.WriteFile(crt, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	c := suite.StartCluster(t, "ig", 2, func(cfg string) string {
		if strings.Contains(cfg, `name = "ig-a"`) {
			return cfg + fmt.Sprintf("\n[ingress]\ndefault_certificate = %q\ndefault_key = %q\n", crt, key)
		}
		return cfg
	})
	w := &world{c: c, ca: ca, pods: map[string]*backend{}}
	if w.client, err = suite.CP.AddHost("ig-client"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cs := suite.CP.Client
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), testNS, metav1.DeleteOptions{}) })
	for _, ic := range []*networkingv1.IngressClass{
		{ObjectMeta: metav1.ObjectMeta{Name: className}, Spec: networkingv1.IngressClassSpec{Controller: controller}},
		{ObjectMeta: metav1.ObjectMeta{Name: "other"}, Spec: networkingv1.IngressClassSpec{Controller: "example.com/other"}},
	} {
		if _, err := cs.NetworkingV1().IngressClasses().Create(ctx, ic, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	a, b := c.Nodes[0], c.Nodes[1]
	for _, p := range []struct {
		name, app string
		node      *harness.Node
	}{
		{"web-a", "web", a}, {"web-b", "web", b},
		{"api-b", "api", b},
		{"other-a", "other", a},
		{"canary-b", "canary", b},
		{"slow-a", "slow", a},
		{"hold-b", "hold", b},
	} {
		w.startBackend(t, p.name, p.app, p.node)
	}
	for svc, n := range map[string]int{"web": 2, "api": 1, "other": 1, "canary": 1, "slow": 1, "hold": 1} {
		w.service(t, svc, svc)
		w.waitEndpoints(t, svc, n)
	}
	return w
}

// startBackend creates a pod labelled app=app on node and starts its echo
// servers once the pod runs. The pod declares no ports: the stand-in's own
// workload stays out of the way; Services name target ports by number.
func (w *world) startBackend(t *testing.T, name, app string, node *harness.Node) *backend {
	t.Helper()
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS, Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{
			NodeName:                      node.Name,
			TerminationGracePeriodSeconds: new(int64),
			Containers:                    []corev1.Container{{Name: "echo", Image: "none"}},
		},
	}
	if _, err := suite.CP.Client.CoreV1().Pods(testNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sb, err := w.c.Kubelets[node.Name].WaitRunning(ctx, testNS, name)
	if err != nil {
		t.Fatal(err)
	}
	echo, err := harness.StartHTTPEcho(sb.NS, harness.HTTPEchoConfig{Name: name, HTTPAddr: fmt.Sprintf(":%d", httpPort), TLSAddr: fmt.Sprintf(":%d", tlsPort)})
	if err != nil {
		t.Fatal(err)
	}
	// Registered after the kubelet's cleanup, so it runs before the pod
	// namespaces go.
	t.Cleanup(echo.Close)
	be := &backend{name: name, node: node, sb: sb, echo: echo}
	w.pods[name] = be
	return be
}

// service creates a Service selecting app=selector: port "http" 80 to the
// echo's HTTP port, "https" 443 to its TLS port.
func (w *world) service(t *testing.T, name, selector string) {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": selector},
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, TargetPort: intstr.FromInt32(httpPort), Protocol: corev1.ProtocolTCP},
				{Name: "https", Port: 443, TargetPort: intstr.FromInt32(tlsPort), Protocol: corev1.ProtocolTCP},
			},
		},
	}
	if _, err := suite.CP.Client.CoreV1().Services(testNS).Create(context.Background(), svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitEndpoints waits until the Service's slices list exactly want ready
// endpoints.
func (w *world) waitEndpoints(t *testing.T, svc string, want int) {
	t.Helper()
	if err := suite.CP.WaitReadyEndpoints(context.Background(), testNS, svc, want); err != nil {
		t.Fatal(err)
	}
}

// Ingress objects, built from small parts.

type ingressOpt func(*networkingv1.Ingress)

// newIngress is an Ingress of class nodenet in testNS.
func newIngress(name string, opts ...ingressOpt) *networkingv1.Ingress {
	cls := className
	ing := &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS, Annotations: map[string]string{}},
		Spec:       networkingv1.IngressSpec{IngressClassName: &cls},
	}
	for _, o := range opts {
		o(ing)
	}
	return ing
}

func rule(host string, paths ...networkingv1.HTTPIngressPath) ingressOpt {
	return func(ing *networkingv1.Ingress) {
		ing.Spec.Rules = append(ing.Spec.Rules, networkingv1.IngressRule{
			Host:             host,
			IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: paths}},
		})
	}
}

// annotate sets nginx.ingress.kubernetes.io/<k> = v for each pair.
func annotate(kv ...string) ingressOpt {
	return func(ing *networkingv1.Ingress) {
		for i := 0; i+1 < len(kv); i += 2 {
			ing.Annotations[nginx+kv[i]] = kv[i+1]
		}
	}
}

func tlsHosts(secret string, hosts ...string) ingressOpt {
	return func(ing *networkingv1.Ingress) {
		ing.Spec.TLS = append(ing.Spec.TLS, networkingv1.IngressTLS{Hosts: hosts, SecretName: secret})
	}
}

func defaultBackend(svc string) ingressOpt {
	return func(ing *networkingv1.Ingress) { ing.Spec.DefaultBackend = backendRef(svc, "") }
}

// class sets spec.ingressClassName; "" removes it.
func class(name string) ingressOpt {
	return func(ing *networkingv1.Ingress) {
		ing.Spec.IngressClassName = nil
		if name != "" {
			ing.Spec.IngressClassName = &name
		}
	}
}

// legacyClass drops spec.ingressClassName and sets the old annotation.
func legacyClass(name string) ingressOpt {
	return func(ing *networkingv1.Ingress) {
		ing.Spec.IngressClassName = nil
		ing.Annotations["kubernetes.io/ingress.class"] = name
	}
}

// backendRef is Service svc's port 80, or its port named portName.
func backendRef(svc, portName string) *networkingv1.IngressBackend {
	port := networkingv1.ServiceBackendPort{Number: 80}
	if portName != "" {
		port = networkingv1.ServiceBackendPort{Name: portName}
	}
	return &networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: svc, Port: port}}
}

func ingPath(p string, typ networkingv1.PathType, svc string) networkingv1.HTTPIngressPath {
	return networkingv1.HTTPIngressPath{Path: p, PathType: &typ, Backend: *backendRef(svc, "")}
}

func prefix(p, svc string) networkingv1.HTTPIngressPath {
	return ingPath(p, networkingv1.PathTypePrefix, svc)
}

func exact(p, svc string) networkingv1.HTTPIngressPath {
	return ingPath(p, networkingv1.PathTypeExact, svc)
}

func implSpecific(p, svc string) networkingv1.HTTPIngressPath {
	return ingPath(p, networkingv1.PathTypeImplementationSpecific, svc)
}

// toPort points a path at a Service port other than 80 (a name or "443").
func toPort(p networkingv1.HTTPIngressPath, port string) networkingv1.HTTPIngressPath {
	if port == "443" {
		p.Backend.Service.Port = networkingv1.ServiceBackendPort{Number: 443}
	} else {
		p.Backend.Service.Port = networkingv1.ServiceBackendPort{Name: port}
	}
	return p
}

func createIngress(t *testing.T, ing *networkingv1.Ingress) *networkingv1.Ingress {
	t.Helper()
	out, err := suite.CP.Client.NetworkingV1().Ingresses(ing.Namespace).Create(context.Background(), ing, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create ingress %s: %v", ing.Name, err)
	}
	return out
}

func deleteIngress(t *testing.T, name string) {
	t.Helper()
	if err := suite.CP.Client.NetworkingV1().Ingresses(testNS).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete ingress %s: %v", name, err)
	}
}

// tlsSecret creates (or replaces) a kubernetes.io/tls Secret for hosts,
// issued by the world's CA, and returns its certificate PEM.
func (w *world) tlsSecret(t *testing.T, name string, hosts ...string) []byte {
	t.Helper()
	certPEM, keyPEM, err := w.ca.Issue(hosts...)
	if err != nil {
		t.Fatal(err)
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM},
	}
	secrets := suite.CP.Client.CoreV1().Secrets(testNS)
	if _, err := secrets.Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
		if _, err := secrets.Update(context.Background(), s, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("tls secret %s: %v", name, err)
		}
	}
	return certPEM
}

// warnings lists the reasons and messages of Warning Events about Ingress
// name, from either events API (the core view shows both).
func warnings(ctx context.Context, name string) ([]string, error) {
	list, err := suite.CP.Client.CoreV1().Events(testNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range list.Items {
		if e.Type == corev1.EventTypeWarning && e.InvolvedObject.Kind == "Ingress" && e.InvolvedObject.Name == name {
			out = append(out, e.Reason+": "+e.Message)
		}
	}
	return out, nil
}

// waitWarning waits for a Warning Event about Ingress name whose reason or
// message contains want, and returns it.
func waitWarning(t *testing.T, name, want string) string {
	t.Helper()
	var got []string
	var found string
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var err error
		if got, err = warnings(ctx, name); err != nil {
			return false, nil
		}
		for _, m := range got {
			if strings.Contains(strings.ToLower(m), strings.ToLower(want)) {
				found = m
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no Warning Event about ingress %s mentioning %q; warnings: %q", name, want, got)
	}
	return found
}
