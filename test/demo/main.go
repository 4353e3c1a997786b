// Command demo is `make demo`: it brings up the local test cluster (a real
// control plane and two nodes, each a network namespace), runs nodenet on
// every node and shows what an operator would see. Everything is removed at
// the end, also on Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodenet/nodenet/test/harness"
)

func main() {
	keep := flag.Bool("keep", false, "keep the cluster running until Ctrl-C")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: needs root (it creates network namespaces)")
		os.Exit(1)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	err := run(ctx, *keep)
	if lerr := harness.LeakCheck(); lerr != nil {
		fmt.Fprintln(os.Stderr, "demo: leak check:", lerr)
		os.Exit(1)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Printf("\n==> "+format+"\n", args...)
}

func run(ctx context.Context, keep bool) error {
	binDir, err := os.MkdirTemp("", harness.Prefix+"bin-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(binDir)
	bin, err := harness.NodenetBinary(binDir)
	if err != nil {
		return err
	}

	step("starting the control plane (etcd, kube-apiserver, kube-controller-manager) in its own network namespace")
	start := time.Now()
	cp, err := harness.StartControlPlane(ctx, harness.Options{})
	if err != nil {
		return err
	}
	defer func() {
		step("tearing down")
		if err := cp.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "teardown:", err)
		}
	}()
	fmt.Printf("API server %s ready in %s\n", cp.URL, time.Since(start).Round(time.Millisecond))

	var nodes []*harness.Node
	for _, name := range []string{"node-a", "node-b"} {
		step("adding %s: a network namespace on the underlay bridge, a Node object, nodenet started inside", name)
		n, err := cp.AddNode(ctx, name)
		if err != nil {
			return err
		}
		if err := n.WriteConfig(n.DefaultConfig("")); err != nil {
			return err
		}
		if err := n.Start(bin); err != nil {
			return err
		}
		nodes = append(nodes, n)
		fmt.Printf("%s: underlay address %s, podCIDR %s\n", n.Name, n.IP, n.PodCIDR)
	}
	for _, n := range nodes {
		t0 := time.Now()
		if err := n.WaitReady(ctx, 2*time.Minute); err != nil {
			return err
		}
		fmt.Printf("%s: nodenet ready (caches synced) after %s\n", n.Name, time.Since(t0).Round(time.Millisecond))
	}
	sandboxes, err := pods(ctx, cp, nodes)
	if err != nil {
		return err
	}
	if err := services(ctx, cp, nodes, sandboxes); err != nil {
		return err
	}
	if err := ingress(ctx, cp, nodes); err != nil {
		return err
	}
	if err := networkPolicy(ctx, cp, bin, nodes, sandboxes); err != nil {
		return err
	}
	for _, n := range nodes {
		step("nodenet status on %s", n.Name)
		out, err := n.StatusText(ctx)
		fmt.Print(out)
		if err != nil {
			return fmt.Errorf("status on %s: %w", n.Name, err)
		}
	}
	if keep {
		step("cluster running; admin kubeconfig (use inside `ip netns exec %s`): %s. Ctrl-C to stop", cp.NS.Name, cp.AdminKubeconfig)
		<-ctx.Done()
	}
	return nil
}

// pods starts one pod on each node (a kubelet stand-in calls nodenet as the
// CNI plugin) and has each one talk to the other across nodes.
func pods(ctx context.Context, cp *harness.ControlPlane, nodes []*harness.Node) ([]*harness.Sandbox, error) {
	step("starting a pod on each node: a kubelet stand-in creates its network namespace and calls nodenet as the CNI plugin")
	if _, err := cp.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo"}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	var sandboxes []*harness.Sandbox
	for _, n := range nodes {
		k, err := n.StartKubelet(ctx)
		if err != nil {
			return nil, err
		}
		name := "web-" + strings.TrimPrefix(n.Name, "node-")
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "demo", Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{NodeName: n.Name, Containers: []corev1.Container{{Name: "web", Image: "none",
				Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}},
		}
		if _, err := cp.Client.CoreV1().Pods("demo").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
		sb, err := k.WaitRunning(ctx, "demo", name)
		if err != nil {
			return nil, err
		}
		fmt.Printf("pod demo/%s on %s: IP %s (from the node's podCIDR %s)\n", name, n.Name, sb.IPs[0], n.PodCIDR)
		sandboxes = append(sandboxes, sb)
	}
	step("pods talking across nodes (each answers with its name and the client address it sees: no NAT)")
	for i, from := range sandboxes {
		to := sandboxes[1-i]
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: from.NS.DialContext}}
		resp, err := c.Get(fmt.Sprintf("http://%s:8080/", to.IPs[0]))
		if err != nil {
			return nil, fmt.Errorf("%s -> %s: %w", from.Name, to.Name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("%s (%s) -> http://%s:8080/  answered: %s", from.Name, from.IPs[0], to.IPs[0], body)
	}
	return sandboxes, nil
}

// services puts both pods behind a NodePort Service and reaches it through
// its ClusterIP from a pod and through the NodePort from outside.
func services(ctx context.Context, cp *harness.ControlPlane, nodes []*harness.Node, pods []*harness.Sandbox) error {
	step("a NodePort Service in front of both pods (kube-controller-manager publishes its EndpointSlice, nodenet programs it)")
	svc, err := cp.Client.CoreV1().Services("demo").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "demo"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	port := svc.Spec.Ports[0].NodePort
	fmt.Printf("service demo/web: ClusterIP %s:80, NodePort %d\n", svc.Spec.ClusterIP, port)
	outside, err := cp.AddHost("demo-out")
	if err != nil {
		return err
	}
	ask := func(what string, ns *harness.NS, addr string) error {
		var a harness.Answer
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
			var err error
			a, err = harness.HTTPFrom(ns, addr)
			return err == nil, nil
		})
		if err != nil {
			return fmt.Errorf("%s: no answer from %s", what, addr)
		}
		fmt.Printf("%-42s -> %-22s answered by %s (saw client %s)\n", what, addr, a.Pod, a.Client)
		return nil
	}
	for i := range 3 {
		if err := ask(fmt.Sprintf("pod %s (%s), request %d", pods[0].Name, pods[0].IPs[0], i+1), pods[0].NS, net.JoinHostPort(svc.Spec.ClusterIP, "80")); err != nil {
			return err
		}
	}
	for _, n := range nodes {
		if err := ask(fmt.Sprintf("outside host %s via %s", outside.IP, n.Name), outside.NS, net.JoinHostPort(n.IP.String(), fmt.Sprint(port))); err != nil {
			return err
		}
	}
	return nil
}
