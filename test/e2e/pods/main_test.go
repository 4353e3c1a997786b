// Package pods tests pod networking end to end: nodenet as the CNI plugin
// called by a kubelet stand-in, pods as network namespaces on several nodes,
// real packets between them.
package pods

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodenet/nodenet/test/harness"
)

var suite harness.Suite

func TestMain(m *testing.M) { os.Exit(harness.RunSuite(m, harness.Options{}, &suite)) }

// cluster is a set of started nodes with a kubelet on each.
type cluster struct {
	nodes    []*harness.Node
	kubelets map[string]*harness.Kubelet // by node name
}

// startCluster starts nodes named prefix-a, prefix-b, ... with the given
// backend, each with a kubelet stand-in.
func startCluster(t *testing.T, prefix, backend string, count int) *cluster {
	t.Helper()
	c := &cluster{kubelets: map[string]*harness.Kubelet{}}
	for i := range count {
		n := suite.NewNode(t, fmt.Sprintf("%s-%c", prefix, 'a'+i))
		cfg := strings.Replace(n.DefaultConfig(""), "[network]\n", fmt.Sprintf("[network]\nbackend = %q\n", backend), 1)
		if err := n.WriteConfig(cfg); err != nil {
			t.Fatal(err)
		}
		if err := n.Start(suite.Nodenet); err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		if err := n.WaitReady(context.Background(), time.Minute); err != nil {
			t.Fatal(err)
		}
		k, err := n.StartKubelet(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		// Registered after the node's cleanup, so it runs first: CNI DEL
		// needs the node namespace and its daemon.
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("==== %s kubelet log (tail)\n%s", n.Name, k.Tail(40))
			}
			if err := k.Stop(); err != nil {
				t.Errorf("stop kubelet on %s: %v", n.Name, err)
			}
		})
		c.kubelets[n.Name] = k
	}
	return c
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
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": "echo"}},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{Name: "echo", Image: "none", Ports: []corev1.ContainerPort{
				{Name: "http", ContainerPort: tcpPort, Protocol: corev1.ProtocolTCP},
				{Name: "udp", ContainerPort: udpPort, Protocol: corev1.ProtocolUDP},
			}}},
		},
	}
}

// reply is what the test workload answers: its pod name and the client
// address it saw.
type reply struct {
	Pod    string
	Client string // IP only
}

func parseReply(s string) (reply, error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return reply{}, fmt.Errorf("unexpected reply %q", s)
	}
	host, _, err := net.SplitHostPort(f[1])
	if err != nil {
		return reply{}, fmt.Errorf("reply %q: %w", s, err)
	}
	return reply{Pod: f[0], Client: host}, nil
}

// httpFrom GETs http://addr/ from inside ns.
func httpFrom(ns *harness.NS, addr string) (reply, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: ns.DialContext, DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	return parseReply(string(b))
}

// udpFrom sends one datagram to addr from inside ns and reads the answer.
func udpFrom(ns *harness.NS, addr string) (reply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := ns.DialContext(ctx, "udp", addr)
	if err != nil {
		return reply{}, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := conn.Write([]byte("hello\n")); err != nil {
		return reply{}, err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return reply{}, fmt.Errorf("udp %s: %w", addr, err)
	}
	return parseReply(line)
}
