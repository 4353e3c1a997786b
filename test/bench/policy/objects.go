package main

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/nodenet/nodenet/test/bench/internal/benchkit"
	"github.com/nodenet/nodenet/test/harness"
)

// The cluster every agent sees: nsCount namespaces of filler pods, most of
// them on a node that does not exist (Pod objects with an IP, no sandbox),
// the policies spread evenly over them and the probe namespace, which
// holds the pods the measurements connect between (on the agent's node).
const (
	probeNS       = "probe"
	nsCount       = 50 // filler namespaces np-00 .. np-49; probe is the 51st policy namespace
	appLabels     = 20 // distinct app=app-<k> values in each namespace
	remoteNode    = "remote"
	podPort       = 80
	podUDPPort    = 81
	allowClientPo = "allow-client" // the probe namespace's policy that lets the client reach the target
)

// remoteBase is where the remote pods' addresses start: inside the cluster
// CIDR, above anything the node IPAM hands the few test nodes.
var remoteBase = netip.MustParseAddr("10.244.128.0")

func nsName(i int) string { return fmt.Sprintf("np-%02d", i) }

// fillerLabels are pod j's labels: app-<j mod 20>, one of four tiers.
func fillerLabels(j int) map[string]string {
	return map[string]string{"app": fmt.Sprintf("app-%d", j%appLabels), "tier": []string{"front", "back", "db", "cache"}[j%4]}
}

// objects creates the API objects, many at a time.
type objects struct {
	client  kubernetes.Interface
	workers int
}

// namespaces creates the filler namespaces (labelled team=t<i mod 10>)
// and the probe namespace.
func (o *objects) namespaces(ctx context.Context) error {
	return benchkit.Parallel(ctx, nsCount+1, o.workers, func(i int) error {
		name, team := probeNS, "probe"
		if i < nsCount {
			name, team = nsName(i), fmt.Sprintf("t%d", i%10)
		}
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"team": team}}}
		if _, err := o.client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create namespace %s: %w", name, err)
		}
		// Pods are refused until the controller manager made the
		// namespace's default service account.
		err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			_, err := o.client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
			return err == nil, nil
		})
		if err != nil {
			return fmt.Errorf("namespace %s has no default service account: %w", name, err)
		}
		return nil
	})
}

// remotePods creates n Pod objects bound to a node that does not exist,
// spread over the filler namespaces, each Running with an IP from
// remoteBase: what the agents see of the rest of the cluster.
func (o *objects) remotePods(ctx context.Context, n int) error {
	base := remoteBase.As4()
	first := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	return benchkit.Parallel(ctx, n, o.workers, func(j int) error {
		a := first + uint32(j) + 1
		ip := netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}).String()
		pod := podSpec(nsName(j%nsCount), fmt.Sprintf("pod-%05d", j), remoteNode, fillerLabels(j))
		created, err := o.client.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		created.Status = corev1.PodStatus{
			Phase: corev1.PodRunning, HostIP: "10.250.0.250", PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		}
		if _, err := o.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("status of pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		return nil
	})
}

// podSpec is an echo pod (the harness workload serves TCP 80 "http" and
// UDP 81 "udp") bound to node.
func podSpec(namespace, name, node string, labels map[string]string) *corev1.Pod {
	return harness.EchoPod(namespace, name, node, labels, podPort, podUDPPort)
}

// fillerPolicy is policy k of namespace ns: it isolates app-<k mod 20> for
// ingress from the front tier of its namespace and from app-<k+1> in the
// teams' namespaces, on TCP http and 8080; every fourth also isolates
// egress, to its namespace's back tier and to an ipBlock with an except.
func fillerPolicy(ns string, k int) *networkingv1.NetworkPolicy {
	tcp := corev1.ProtocolTCP
	http, alt := intstr.FromString("http"), intstr.FromInt32(8080)
	p := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pol-%03d", k), Namespace: ns},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", k%appLabels)}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{
					{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "front"}}},
					{
						NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
							Key: "team", Operator: metav1.LabelSelectorOpIn, Values: []string{fmt.Sprintf("t%d", k%10), fmt.Sprintf("t%d", (k+3)%10)},
						}}},
						PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", (k+1)%appLabels)}},
					},
				},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &http}, {Protocol: &tcp, Port: &alt}},
			}},
		},
	}
	if k%4 == 0 {
		p.Spec.PolicyTypes = append(p.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
		p.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{
			To: []networkingv1.NetworkPolicyPeer{
				{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "back"}}},
				{IPBlock: &networkingv1.IPBlock{CIDR: "192.0.2.0/24", Except: []string{"192.0.2.128/25"}}},
			},
		}}
	}
	return p
}

// targetPolicy lets the probe client reach the target (and the probe
// server) on TCP 80: with it, the target is isolated and the client
// allowed.
func targetPolicy() *networkingv1.NetworkPolicy {
	tcp := corev1.ProtocolTCP
	port := intstr.FromInt32(podPort)
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: allowClientPo, Namespace: probeNS},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"role": "target"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}},
			}},
		},
	}
}

// policies creates total policies, round robin over the filler
// namespaces and the probe namespace; the last is targetPolicy. It returns
// when the last create returned.
func (o *objects) policies(ctx context.Context, total int) error {
	return benchkit.Parallel(ctx, total, o.workers, func(i int) error {
		p := targetPolicy()
		if i < total-1 {
			ns, k := i%(nsCount+1), i/(nsCount+1)
			p = fillerPolicy(probeNS, k)
			if ns < nsCount {
				p = fillerPolicy(nsName(ns), k)
			}
		}
		if _, err := o.client.NetworkingV1().NetworkPolicies(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create policy %s/%s: %w", p.Namespace, p.Name, err)
		}
		return nil
	})
}

// deletePolicies removes every policy (the next agent starts from none).
func (o *objects) deletePolicies(ctx context.Context) error {
	return benchkit.Parallel(ctx, nsCount+1, o.workers, func(i int) error {
		ns := probeNS
		if i < nsCount {
			ns = nsName(i)
		}
		if err := o.client.NetworkingV1().NetworkPolicies(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
			return fmt.Errorf("delete policies of %s: %w", ns, err)
		}
		return nil
	})
}
