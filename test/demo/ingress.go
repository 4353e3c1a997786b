package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodenet/nodenet/test/harness"
)

// ingress puts an Ingress in front of the web pods and a new api pod and
// sends requests from outside to each node's port 80: host and path pick
// the Service, and nodenet proxies straight to one of its pods.
func ingress(ctx context.Context, cp *harness.ControlPlane, nodes []*harness.Node) error {
	step("an Ingress (class nodenet, the default class): shop.demo.test / -> Service web; shop.demo.test /api and admin.demo.test / -> Service api")
	cs := cp.Client
	if _, err := cs.NetworkingV1().IngressClasses().Create(ctx, &networkingv1.IngressClass{
		ObjectMeta: metav1.ObjectMeta{Name: "nodenet", Annotations: map[string]string{"ingressclass.kubernetes.io/is-default-class": "true"}},
		Spec:       networkingv1.IngressClassSpec{Controller: "nodenet.io/ingress"},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "api-b", Namespace: "demo", Labels: map[string]string{"app": "api"}},
		Spec: corev1.PodSpec{NodeName: nodes[1].Name, Containers: []corev1.Container{{Name: "api", Image: "none",
			Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}},
	}
	if _, err := cs.CoreV1().Pods("demo").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return err
	}
	if _, err := cs.CoreV1().Services("demo").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "demo"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "api"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	prefix := networkingv1.PathTypePrefix
	path := func(p, svc string) networkingv1.HTTPIngressPath {
		return networkingv1.HTTPIngressPath{Path: p, PathType: &prefix, Backend: networkingv1.IngressBackend{
			Service: &networkingv1.IngressServiceBackend{Name: svc, Port: networkingv1.ServiceBackendPort{Number: 80}}}}
	}
	rule := func(host string, paths ...networkingv1.HTTPIngressPath) networkingv1.IngressRule {
		return networkingv1.IngressRule{Host: host, IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: paths}}}
	}
	if _, err := cs.NetworkingV1().Ingresses("demo").Create(ctx, &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: "demo"},
		Spec: networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{
			rule("shop.demo.test", path("/", "web"), path("/api", "api")),
			rule("admin.demo.test", path("/", "api")),
		}},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	client, err := cp.AddHost("demo-in")
	if err != nil {
		return err
	}
	for _, req := range []struct {
		node       *harness.Node
		host, path string
		want       string // the answering pod's name prefix
	}{
		{nodes[0], "shop.demo.test", "/", "web-"},
		{nodes[0], "shop.demo.test", "/", "web-"},
		{nodes[0], "shop.demo.test", "/api/orders", "api-"},
		{nodes[1], "admin.demo.test", "/", "api-"},
		{nodes[1], "shop.demo.test", "/apix", "web-"}, // a path prefix is whole elements
	} {
		var got string
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
			got = askIngress(client.NS, req.node.IP.String(), req.host, req.path)
			return strings.HasPrefix(got, req.want), nil
		})
		if err != nil {
			return fmt.Errorf("http://%s%s via %s: answered %q, want a %s pod", req.host, req.path, req.node.Name, got, req.want)
		}
		who := strings.TrimSpace(got)
		if a, err := harness.ParseAnswer(got); err == nil {
			who = fmt.Sprintf("%s (connection from %s)", a.Pod, a.Client)
		}
		fmt.Printf("outside host %s: GET %-34s to %s:80 -> answered by pod %s\n", client.IP, "http://"+req.host+req.path, req.node.Name, who)
	}
	return nil
}

// askIngress sends GET path with Host host to addr:80 from inside ns and
// returns the body, or what went wrong.
func askIngress(ns *harness.NS, addr, host, path string) string {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return ns.DialContext(ctx, "tcp", net.JoinHostPort(addr, "80"))
		},
	}}
	resp, err := c.Get("http://" + host + path)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return string(b)
}
