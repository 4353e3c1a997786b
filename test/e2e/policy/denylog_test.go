package policy

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodenet/nodenet/test/harness"
)

// TestDenyLog: a connection a NetworkPolicy denies is logged by the node
// that drops it, naming the isolated pod, the direction, source,
// destination and ports, and counted for the pod's namespace; for ingress
// on the server's node, for egress on the client's.
func TestDenyLog(t *testing.T) {
	suite.Require(t)
	ctx := context.Background()
	// A rate well above the probing below, so every attempt is logged; a
	// group other than the default shows the setting reaches rules and reader.
	c := suite.StartCluster(t, "dl", 2, func(cfg string) string {
		return cfg + "\n[policy]\nlog_denied = true\nlog_rate = \"50/second\"\nlog_burst = 20\nnflog_group = 7\n"
	})
	const ns = "dl"
	if _, err := suite.CP.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"ns": ns}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = suite.CP.Client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
	w := &world{t: t, c: c, pods: map[string]*harness.Sandbox{}}
	for i, name := range []string{"server", "client"} {
		node := c.Nodes[i].Name
		pod := harness.EchoPod(ns, name, node, map[string]string{"pod": name}, port, port+1)
		if _, err := suite.CP.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		sb, err := c.Kubelets[node].WaitRunning(ctx, ns, name)
		if err != nil {
			t.Fatal(err)
		}
		w.pods[ns+"/"+name] = sb
	}
	server, client := w.pods["dl/server"], w.pods["dl/client"]
	srvNode, cliNode := c.Nodes[0], c.Nodes[1]
	if !w.reach("dl/client", "dl/server") {
		t.Fatal("client cannot reach server before any policy")
	}

	// attempt connects from the client with a fixed source port, so its
	// log line is told apart from those of the probes before it.
	attempt := func(sport int) {
		t.Helper()
		err := client.NS.Do(func() error {
			d := net.Dialer{Timeout: 400 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: client.IPs[0].AsSlice(), Port: sport}}
			conn, err := d.Dial("tcp", net.JoinHostPort(server.IPs[0].String(), strconv.Itoa(port)))
			if err == nil {
				conn.Close()
				return fmt.Errorf("connection from port %d succeeded, want it denied", sport)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// As the daemon's text log writes it: message, then attributes.
	line := func(direction, pod string, sport int) string {
		return fmt.Sprintf(`policy denied packet component=denylog direction=%s namespace=%s pod=%s src=%s dst=%s proto=tcp sport=%d dport=%d`,
			direction, ns, pod, client.IPs[0], server.IPs[0], sport, port)
	}

	// Ingress: the server's node drops and logs.
	before := deniedCounts(t, srvNode, ns, "ingress")
	w.apply(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "deny-in", Namespace: ns},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": "server"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}})
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return !w.reach("dl/client", "dl/server"), nil
	}); err != nil {
		t.Fatal("default-deny ingress never took effect")
	}
	attempt(40123)
	if err := srvNode.WaitLog(ctx, line("ingress", "server", 40123), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	waitDenied(t, srvNode, ns, "ingress", before)

	// Egress: with ingress open again and the client's egress denied, the
	// client's node drops and logs.
	w.remove(ns, "deny-in")
	before = deniedCounts(t, cliNode, ns, "egress")
	w.apply(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "deny-out", Namespace: ns},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": "client"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}}})
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return !w.reach("dl/client", "dl/server"), nil
	}); err != nil {
		t.Fatal("default-deny egress never took effect")
	}
	attempt(40124)
	if err := cliNode.WaitLog(ctx, line("egress", "client", 40124), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	waitDenied(t, cliNode, ns, "egress", before)
}

// deniedMetrics are the logged (rate-limited) and the exact counter.
var deniedMetrics = []string{"nodenet_policy_denied_packets_logged_total", "nodenet_policy_denied_packets_total"}

// deniedCounts reads deniedMetrics of a namespace and direction from the
// node's /metrics; 0 for a series that does not exist yet.
func deniedCounts(t *testing.T, n *harness.Node, ns, direction string) []float64 {
	t.Helper()
	code, body, err := n.Admin("/metrics")
	if err != nil || code != 200 {
		t.Fatalf("%s /metrics: %d %v", n.Name, code, err)
	}
	var out []float64
	for _, name := range deniedMetrics {
		re := regexp.MustCompile(`(?m)^` + name + `\{direction="` + direction + `",namespace="` + regexp.QuoteMeta(ns) + `"\} (\S+)$`)
		m := re.FindStringSubmatch(body)
		if m == nil {
			out = append(out, 0)
			continue
		}
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			t.Fatalf("%s /metrics: %q: %v", n.Name, m[0], err)
		}
		out = append(out, v)
	}
	return out
}

// waitDenied polls until each of the node's counters exceeds before.
func waitDenied(t *testing.T, n *harness.Node, ns, direction string, before []float64) {
	t.Helper()
	var got []float64
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		got = deniedCounts(t, n, ns, direction)
		return got[0] > before[0] && got[1] > before[1], nil
	})
	if err != nil {
		t.Fatalf("%s: %v{namespace=%q,direction=%q} are %v (were %v), want both risen", n.Name, deniedMetrics, ns, direction, got, before)
	}
}
