// Package pods tests pod networking end to end: nodenet as the CNI plugin
// called by a kubelet stand-in, pods as network namespaces on several nodes,
// real packets between them.
package pods

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodenet/nodenet/test/harness"
)

var suite harness.Suite

func TestMain(m *testing.M) { os.Exit(harness.RunSuite(m, harness.Options{}, &suite)) }

// startCluster starts count nodes with the given backend and a kubelet on each.
func startCluster(t *testing.T, prefix, backend string, count int) *harness.Cluster {
	t.Helper()
	return suite.StartCluster(t, prefix, count, func(cfg string) string {
		return strings.Replace(cfg, "[network]\n", fmt.Sprintf("[network]\nbackend = %q\n", backend), 1)
	})
}

// namespace creates a namespace deleted at the end of the test.
func namespace(t *testing.T, name string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := suite.CP.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = suite.CP.Client.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name
}

// Ports every test pod serves.
const (
	tcpPort = 8080
	udpPort = 8081
)

// createPod creates a pod bound to node, serving tcpPort and udpPort.
func createPod(t *testing.T, ns, name, node string) {
	t.Helper()
	if _, err := suite.CP.Client.CoreV1().Pods(ns).Create(context.Background(), podSpec(ns, name, node), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// podSpec is a pod bound to node, serving tcpPort and udpPort.
func podSpec(ns, name, node string) *corev1.Pod {
	return harness.EchoPod(ns, name, node, map[string]string{"app": "echo"}, tcpPort, udpPort)
}

type reply = harness.Answer

var (
	httpFrom = harness.HTTPFrom
	udpFrom  = harness.UDPFrom
)
