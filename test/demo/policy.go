package main

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodenet/nodenet/test/harness"
)

// networkPolicy isolates the web pods with a default-deny ingress policy,
// shows web-a's connection to web-b dropped, then opens port 8080 to pods
// labelled role=client and shows the same connection from a labelled pod
// pass, with `nodenet explain` saying why each time.
func networkPolicy(ctx context.Context, cp *harness.ControlPlane, bin string, nodes []*harness.Node, pods []*harness.Sandbox) error {
	from, to := pods[0], pods[1]
	target := net.JoinHostPort(to.IPs[0].String(), "8080")
	reach := func() bool {
		dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		c, err := from.NS.DialContext(dctx, "tcp", target)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	until := func(want bool, what string) error {
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
			return reach() == want, nil
		})
		if err != nil {
			return fmt.Errorf("%s: still %v after a minute", what, !want)
		}
		verdict := "blocked (dropped)"
		if want {
			verdict = "connected"
		}
		fmt.Printf("%s (%s) -> %s: %s\n", from.Name, from.IPs[0], target, verdict)
		return nil
	}
	explain := func() {
		out, err := exec.CommandContext(ctx, bin, "explain", from.IPs[0].String(), to.IPs[0].String(),
			"--port", "8080", "--socket", nodes[1].Socket).CombinedOutput()
		fmt.Printf("$ nodenet explain %s %s --port 8080   (on %s)\n%s", from.IPs[0], to.IPs[0], nodes[1].Name, out)
		if err != nil {
			fmt.Println("explain:", err)
		}
	}
	policies := cp.Client.NetworkingV1().NetworkPolicies("demo")

	step("NetworkPolicy: default-deny ingress for the web pods")
	if _, err := policies.Create(ctx, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "default-deny", Namespace: "demo"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if err := until(false, "default-deny"); err != nil {
		return err
	}
	explain()

	step("NetworkPolicy: allow TCP 8080 from pods labelled role=client, and label %s", from.Name)
	port := intstr.FromInt32(8080)
	if _, err := policies.Create(ctx, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "allow-clients", Namespace: "demo"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: &port}},
			}},
		}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if _, err := cp.Client.CoreV1().Pods("demo").Patch(ctx, from.Name, "application/merge-patch+json",
		[]byte(`{"metadata":{"labels":{"role":"client"}}}`), metav1.PatchOptions{}); err != nil {
		return err
	}
	if err := until(true, "allow-clients"); err != nil {
		return err
	}
	explain()
	return nil
}
