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
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
	if err := pods(ctx, cp, nodes); err != nil {
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
func pods(ctx context.Context, cp *harness.ControlPlane, nodes []*harness.Node) error {
	step("starting a pod on each node: a kubelet stand-in creates its network namespace and calls nodenet as the CNI plugin")
	if _, err := cp.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo"}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	var sandboxes []*harness.Sandbox
	for _, n := range nodes {
		k, err := n.StartKubelet(ctx)
		if err != nil {
			return err
		}
		name := "web-" + strings.TrimPrefix(n.Name, "node-")
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "demo"},
			Spec: corev1.PodSpec{NodeName: n.Name, Containers: []corev1.Container{{Name: "web", Image: "none",
				Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}},
		}
		if _, err := cp.Client.CoreV1().Pods("demo").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			return err
		}
		sb, err := k.WaitRunning(ctx, "demo", name)
		if err != nil {
			return err
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
			return fmt.Errorf("%s -> %s: %w", from.Name, to.Name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("%s (%s) -> http://%s:8080/  answered: %s", from.Name, from.IPs[0], to.IPs[0], body)
	}
	return nil
}
