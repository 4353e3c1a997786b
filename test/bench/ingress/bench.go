package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodenet/nodenet/test/harness"
)

const (
	benchNS     = "bench"
	backendPort = 8080
	nginxHTTP   = 8080 // nginx's ports in the node namespace; nodenet has 80 and 443
	nginxHTTPS  = 8443
)

// routes are what wrk requests; each Ingress path is a Prefix.
var (
	routes = []route{{"bench.test", "/"}, {"bench.test", "/api/items"}, {"other.test", "/"}}
	// services are the backends: name → pods.
	services = map[string][]string{"web": {"web-1", "web-2"}, "api": {"api-1", "api-2"}}
	// wantService says which Service serves each route.
	wantService = map[route]string{routes[0]: "web", routes[1]: "api", routes[2]: "api"}
)

// backendPod is a pod and its echo server.
type backendPod struct {
	name, service string
	ip            string
	echo          *harness.HTTPEcho
}

// benchEnv is the set-up cluster: one node with both proxies, the pods, a
// client host.
type benchEnv struct {
	o      options
	node   *harness.Node
	client *harness.Host
	pods   []*backendPod
	nginx  *nginx
	work   string
}

// setup builds everything; on error the returned env (if any) still needs
// close.
func setup(ctx context.Context, cp *harness.ControlPlane, bin, work string, o options) (*benchEnv, error) {
	e := &benchEnv{o: o, work: work}
	ca, err := harness.NewTestCA("bench-ingress")
	if err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := ca.Issue("bench.test", "other.test")
	if err != nil {
		return nil, err
	}
	crt, key := filepath.Join(work, "tls.crt"), filepath.Join(work, "tls.key")
	if err := errors.Join(os.WriteFile(crt, certPEM, 0o600), os.WriteFile(key, keyPEM, 0o600)); err != nil {
		return nil, err
	}
	fmt.Fprintln(stderr, "starting the node with nodenet ...")
	if e.node, err = cp.AddNode(ctx, "bi-node"); err != nil {
		return nil, err
	}
	// Info, not the harness' debug: logging must not weigh on the timing.
	// wrk sends an IP address as SNI: the default certificate answers, the
	// same one nginx serves.
	cfg := strings.Replace(e.node.DefaultConfig(""), `level = "debug"`, `level = "info"`, 1) +
		fmt.Sprintf("\n[ingress]\ndefault_certificate = %q\ndefault_key = %q\naccess_log = %v\n", crt, key, o.accessLog)
	if err := e.node.WriteConfig(cfg); err != nil {
		return nil, err
	}
	if err := e.node.Start(bin); err != nil {
		return nil, err
	}
	if err := e.node.WaitReady(ctx, time.Minute); err != nil {
		return nil, err
	}
	kubelet, err := e.node.StartKubelet(ctx)
	if err != nil {
		return nil, err
	}
	if e.client, err = cp.AddHost("bi-client"); err != nil {
		return e, err
	}
	// Many short connections from one address: let ports be reused (the
	// client's own namespace only).
	for _, kv := range []string{"net.ipv4.ip_local_port_range=1024 65535", "net.ipv4.tcp_tw_reuse=1"} {
		if _, err := e.client.NS.Exec(ctx, "sysctl", "-q", "-w", kv); err != nil {
			return e, err
		}
	}
	if err := e.objects(ctx, cp, kubelet, certPEM, keyPEM); err != nil {
		return e, err
	}
	upstreams := map[string][]string{}
	for _, p := range e.pods {
		upstreams[p.service] = append(upstreams[p.service], net.JoinHostPort(p.ip, strconv.Itoa(backendPort)))
	}
	var nroutes []nginxRoute
	for _, r := range routes {
		prefix := r.Path
		if prefix != "/" {
			prefix = "/" + strings.Split(r.Path, "/")[1]
		}
		nroutes = append(nroutes, nginxRoute{Host: r.Host, Prefix: prefix, Upstream: wantService[r]})
	}
	fmt.Fprintln(stderr, "starting nginx in the node's namespace ...")
	if e.nginx, err = startNginx(ctx, e.node.NS, nginxConfig{
		Dir: filepath.Join(work, "nginx"), HTTPPort: nginxHTTP, HTTPSPort: nginxHTTPS,
		Cert: crt, Key: key, AccessLog: o.accessLog, Upstreams: upstreams, Routes: nroutes,
		MaxBodySize: "1m", ProxyBuffering: true,
	}); err != nil {
		return e, err
	}
	return e, e.check(ctx)
}

// objects creates the pods (with their echo servers), Services, the TLS
// Secret and the Ingress.
func (e *benchEnv) objects(ctx context.Context, cp *harness.ControlPlane, k *harness.Kubelet, certPEM, keyPEM []byte) error {
	cs := cp.Client
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNS}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if _, err := cs.NetworkingV1().IngressClasses().Create(ctx, &networkingv1.IngressClass{
		ObjectMeta: metav1.ObjectMeta{Name: "nodenet"}, Spec: networkingv1.IngressClassSpec{Controller: "nodenet.io/ingress"},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	for _, svc := range slices.Sorted(maps.Keys(services)) {
		for _, name := range services[svc] {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: benchNS, Labels: map[string]string{"app": svc}},
				Spec: corev1.PodSpec{NodeName: e.node.Name, TerminationGracePeriodSeconds: new(int64),
					Containers: []corev1.Container{{Name: "echo", Image: "none"}}},
			}
			if _, err := cs.CoreV1().Pods(benchNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
				return err
			}
			sb, err := k.WaitRunning(ctx, benchNS, name)
			if err != nil {
				return err
			}
			echo, err := harness.StartHTTPEcho(sb.NS, harness.HTTPEchoConfig{Name: name, HTTPAddr: fmt.Sprintf(":%d", backendPort), Small: true})
			if err != nil {
				return err
			}
			e.pods = append(e.pods, &backendPod{name: name, service: svc, ip: sb.IPs[0].String(), echo: echo})
		}
		if _, err := cs.CoreV1().Services(benchNS).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: svc, Namespace: benchNS},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": svc},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(backendPort)}}},
		}, metav1.CreateOptions{}); err != nil {
			return err
		}
		if err := cp.WaitReadyEndpoints(ctx, benchNS, svc, len(services[svc])); err != nil {
			return err
		}
	}
	if _, err := cs.CoreV1().Secrets(benchNS).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "bench-tls", Namespace: benchNS}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	cls := "nodenet"
	prefix := networkingv1.PathTypePrefix
	path := func(p, svc string) networkingv1.HTTPIngressPath {
		return networkingv1.HTTPIngressPath{Path: p, PathType: &prefix, Backend: networkingv1.IngressBackend{
			Service: &networkingv1.IngressServiceBackend{Name: svc, Port: networkingv1.ServiceBackendPort{Number: 80}}}}
	}
	rule := func(host string, paths ...networkingv1.HTTPIngressPath) networkingv1.IngressRule {
		return networkingv1.IngressRule{Host: host, IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: paths}}}
	}
	_, err := cs.NetworkingV1().Ingresses(benchNS).Create(ctx, &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: "bench", Namespace: benchNS,
			// Both proxies serve HTTP and HTTPS alike: no redirect.
			Annotations: map[string]string{"nginx.ingress.kubernetes.io/ssl-redirect": "false"}},
		Spec: networkingv1.IngressSpec{
			IngressClassName: &cls,
			TLS:              []networkingv1.IngressTLS{{Hosts: []string{"bench.test", "other.test"}, SecretName: "bench-tls"}},
			Rules: []networkingv1.IngressRule{
				rule("bench.test", path("/", "web"), path("/api", "api")),
				rule("other.test", path("/", "api")),
			},
		},
	}, metav1.CreateOptions{})
	return err
}

// target is one proxy's address for a scheme.
func (e *benchEnv) target(proxy, scheme string) string {
	port := map[string]int{"nodenet/http": 80, "nodenet/https": 443, "nginx/http": nginxHTTP, "nginx/https": nginxHTTPS}[proxy+"/"+scheme]
	return net.JoinHostPort(e.node.IP.String(), strconv.Itoa(port))
}

// check waits until both proxies answer every route, over both schemes,
// from the pods of the right Service: the comparison is only fair if both
// route alike.
func (e *benchEnv) check(ctx context.Context) error {
	podService := map[string]string{}
	for _, p := range e.pods {
		podService[p.name] = p.service
	}
	for _, proxy := range []string{"nodenet", "nginx"} {
		for _, scheme := range []string{"http", "https"} {
			addr := e.target(proxy, scheme)
			c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					return e.client.NS.DialContext(ctx, "tcp", addr)
				},
				TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // wrk does not verify either
			}}
			for _, r := range routes {
				var got string
				err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
					got = ask(c, scheme+"://"+r.Host+r.Path)
					return podService[strings.TrimSpace(got)] == wantService[r], nil
				})
				if err != nil {
					return fmt.Errorf("%s %s://%s%s: answered %q, want a pod of Service %s", proxy, scheme, r.Host, r.Path, got, wantService[r])
				}
			}
			c.CloseIdleConnections()
		}
	}
	return nil
}

func ask(c *http.Client, url string) string {
	resp, err := c.Get(url)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("%d %s", resp.StatusCode, b)
	}
	return string(b)
}

// measure runs wrk for every scheme, mode and proxy.
func (e *benchEnv) measure(ctx context.Context) ([]modeResult, error) {
	var rows []modeResult
	for _, scheme := range []string{"http", "https"} {
		for _, closeConn := range []bool{false, true} {
			mode := scheme + " keep-alive"
			if closeConn {
				mode = scheme + " new-connection"
			}
			script := filepath.Join(e.work, fmt.Sprintf("%s-%v.lua", scheme, closeConn))
			if err := os.WriteFile(script, []byte(wrkScript(routes, closeConn)), 0o600); err != nil {
				return nil, err
			}
			row := modeResult{Mode: mode}
			for round := range e.o.rounds {
				order := []string{"nodenet", "nginx"}
				if round%2 == 1 {
					slices.Reverse(order)
				}
				for _, proxy := range order {
					m, err := e.runWrk(ctx, proxy, scheme, script)
					if err != nil {
						return nil, fmt.Errorf("%s, %s: %w", mode, proxy, err)
					}
					fmt.Fprintf(stderr, "  %-20s %-8s round %d: %8.0f req/s  p50 %-9s p99 %-9s errors: socket %+v, non-2xx/3xx %d\n",
						mode, proxy, round+1, m.ReqPerSec, fmtLatency(m.P50), fmtLatency(m.P99), m.SocketErrors, m.Non2xx3xx)
					best, errs := &row.Nodenet, &row.NodenetErrors
					if proxy == "nginx" {
						best, errs = &row.Nginx, &row.NginxErrors
					}
					*errs += m.errors()
					if m.ReqPerSec > best.ReqPerSec {
						*best = m
					}
				}
			}
			rows = append(rows, row)
		}
	}
	return rows, nil
}

// runWrk warms up, then measures one proxy and records its CPU time.
func (e *benchEnv) runWrk(ctx context.Context, proxy, scheme, script string) (measurement, error) {
	url := scheme + "://" + e.target(proxy, scheme) + "/"
	wrk := func(d time.Duration) (string, error) {
		return e.client.NS.Exec(ctx, "wrk", "-t", strconv.Itoa(e.o.threads), "-c", strconv.Itoa(e.o.connections),
			"-d", fmt.Sprintf("%ds", int(d.Round(time.Second).Seconds())), "--latency", "-s", script, url)
	}
	if _, err := wrk(e.o.warmup); err != nil {
		return measurement{}, err
	}
	pid := e.node.Daemon.Pid()
	if proxy == "nginx" {
		pid = e.nginx.proc.Pid()
	}
	cpu0, err := procCPU(pid)
	if err != nil {
		return measurement{}, err
	}
	out, err := wrk(e.o.duration)
	if err != nil {
		return measurement{}, err
	}
	cpu1, err := procCPU(pid)
	if err != nil {
		return measurement{}, err
	}
	r, err := parseWrk(out)
	return measurement{wrkResult: r, CPU: cpu1 - cpu0}, err
}

// close stops nginx and the echo servers; the control plane's Stop removes
// the node (kubelet, daemon, namespaces) and the client host.
func (e *benchEnv) close() error {
	var errs []error
	if e.nginx != nil {
		errs = append(errs, e.nginx.stop())
	}
	for _, p := range e.pods {
		p.echo.Close()
	}
	return errors.Join(errs...)
}
