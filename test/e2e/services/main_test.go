// Package services tests the Service proxy end to end: Services and
// EndpointSlices from the real control plane (kube-controller-manager makes
// the slices), pods from the kubelet stand-in, real packets.
package services

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodenet/nodenet/test/harness"
)

var suite harness.Suite

func TestMain(m *testing.M) { os.Exit(harness.RunSuite(m, harness.Options{}, &suite)) }

// Ports the backend pods serve.
const (
	tcpPort = 8080
	udpPort = 8081
)

// env is one test's cluster and namespace.
type env struct {
	t  *testing.T
	c  *harness.Cluster
	ns string
}

// pod creates a pod with labels on node and waits until it runs.
func (e *env) pod(name, node string, labels map[string]string) *harness.Sandbox {
	e.t.Helper()
	ctx := context.Background()
	pod := harness.EchoPod(e.ns, name, node, labels, tcpPort, udpPort)
	if _, err := suite.CP.Client.CoreV1().Pods(e.ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	sb, err := e.c.Kubelets[node].WaitRunning(ctx, e.ns, name)
	if err != nil {
		e.t.Fatal(err)
	}
	return sb
}

func (e *env) deletePod(name string) {
	e.t.Helper()
	if err := suite.CP.Client.CoreV1().Pods(e.ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// service creates a Service selecting app=<selector> with a TCP port 80 to
// the named port "http" and a UDP port 81 to "udp"; edit adjusts the spec.
func (e *env) service(name, selector string, edit func(*corev1.Service)) *corev1.Service {
	e.t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": selector},
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP},
				{Name: "dns", Port: 81, TargetPort: intstr.FromString("udp"), Protocol: corev1.ProtocolUDP},
			},
		},
	}
	if edit != nil {
		edit(svc)
	}
	out, err := suite.CP.Client.CoreV1().Services(e.ns).Create(context.Background(), svc, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// waitEndpoints waits until the service's slices list exactly want ready
// endpoints, as kube-controller-manager publishes them.
func (e *env) waitEndpoints(svc string, want int) {
	e.t.Helper()
	if err := suite.CP.WaitReadyEndpoints(context.Background(), e.ns, svc, want); err != nil {
		e.t.Fatal(err)
	}
}

// eventually polls ask until it answers as check wants (the proxy programs
// asynchronously), then returns that answer.
func (e *env) eventually(what string, ask func() (harness.Answer, error), check func(harness.Answer) bool) harness.Answer {
	e.t.Helper()
	var last harness.Answer
	var lastErr error
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		last, lastErr = ask()
		return lastErr == nil && check(last), nil
	})
	if err != nil {
		e.t.Fatalf("never: %s (last answer %+v, error %v)", what, last, lastErr)
	}
	return last
}

func hostPort(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }

func clusterIP(svc *corev1.Service) string { return svc.Spec.ClusterIP }

func nodePort(svc *corev1.Service, name string) int {
	for _, p := range svc.Spec.Ports {
		if p.Name == name {
			return int(p.NodePort)
		}
	}
	panic(fmt.Sprintf("service %s has no port %s", svc.Name, name))
}
