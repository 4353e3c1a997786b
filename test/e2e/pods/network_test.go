package pods

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodenet/nodenet/test/harness"
)

// TestPodNetwork is the Kubernetes network model on 3 nodes, for each
// backend: pods get addresses from their node's podCIDR, every pod reaches
// every other over TCP and UDP and sees the sender's own pod IP, traffic to
// the outside is masqueraded, a deleted pod's address is freed, and a
// deleted node's routes disappear from the others.
func TestPodNetwork(t *testing.T) {
	suite.Require(t)
	for _, tc := range []struct{ prefix, backend string }{{"hg", "host-gw"}, {"vx", "vxlan"}} {
		t.Run(tc.backend, func(t *testing.T) { testPodNetwork(t, tc.prefix, tc.backend) })
	}
}

type podInfo struct {
	name string
	node *harness.Node
	sb   *harness.Sandbox
}

func testPodNetwork(t *testing.T, prefix, backend string) {
	ctx := context.Background()
	c := startCluster(t, prefix, backend, 3)
	ns := namespace(t, "net-"+prefix)
	var pods []*podInfo
	for _, n := range c.Nodes {
		for i := range 2 {
			p := &podInfo{name: fmt.Sprintf("%s-%d", n.Name, i), node: n}
			createPod(t, ns, p.name, n.Name)
			pods = append(pods, p)
		}
	}
	for _, p := range pods {
		sb, err := c.Kubelets[p.node.Name].WaitRunning(ctx, ns, p.name)
		if err != nil {
			t.Fatal(err)
		}
		p.sb = sb
		cidr := netip.MustParsePrefix(p.node.PodCIDR)
		if len(sb.IPs) != 1 || !cidr.Contains(sb.IPs[0]) {
			t.Fatalf("pod %s on %s got %v, want one address in %s", p.name, p.node.Name, sb.IPs, cidr)
		}
		wantMTU := map[string]string{"host-gw": "mtu 1500", "vxlan": "mtu 1450"}[backend]
		if link, _ := sb.NS.IPOutput("link", "show", "eth0"); !strings.Contains(link, wantMTU) {
			t.Errorf("pod %s eth0 (%s): want %s", p.name, strings.TrimSpace(link), wantMTU)
		}
		api, err := suite.CP.Client.CoreV1().Pods(ns).Get(ctx, p.name, metav1.GetOptions{})
		if err != nil || api.Status.PodIP != sb.IPs[0].String() {
			t.Fatalf("pod %s status podIP %q, sandbox %v: %v", p.name, api.Status.PodIP, sb.IPs, err)
		}
	}

	// Every pod reaches every other, TCP and UDP, without NAT.
	for _, from := range pods {
		for _, to := range pods {
			if from == to {
				continue
			}
			target := to.sb.IPs[0].String()
			for proto, ask := range map[string]func(*harness.NS, string) (reply, error){
				"tcp": func(ns *harness.NS, ip string) (reply, error) {
					return httpFrom(ns, net.JoinHostPort(ip, strconv.Itoa(tcpPort)))
				},
				"udp": func(ns *harness.NS, ip string) (reply, error) {
					return udpFrom(ns, net.JoinHostPort(ip, strconv.Itoa(udpPort)))
				},
			} {
				r, err := ask(from.sb.NS, target)
				if err != nil {
					t.Errorf("%s %s -> %s (%s): %v", proto, from.name, to.name, target, err)
					continue
				}
				if r.Pod != to.name || r.Client != from.sb.IPs[0].String() {
					t.Errorf("%s %s -> %s: answered by %s seeing client %s; want %s seeing %s", proto, from.name, to.name, r.Pod, r.Client, to.name, from.sb.IPs[0])
				}
			}
		}
	}
	if t.Failed() {
		return
	}

	// Outside the cluster CIDR: masqueraded to the node's address.
	out, err := suite.CP.AddHost("out-" + prefix)
	if err != nil {
		t.Fatal(err)
	}
	l, err := out.NS.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "outside %s\n", r.RemoteAddr)
	})}
	go srv.Serve(l)
	defer srv.Close()
	for _, p := range []*podInfo{pods[0], pods[len(pods)-1]} {
		r, err := httpFrom(p.sb.NS, out.IP.String()+":80")
		if err != nil {
			t.Fatalf("%s -> outside: %v", p.name, err)
		}
		if r.Client != p.node.IP.String() {
			t.Errorf("%s -> outside seen as %s, want the node address %s (masqueraded)", p.name, r.Client, p.node.IP)
		}
	}

	// Deleting a pod frees its address.
	victim := pods[1]
	lease := filepath.Join(victim.node.StateDir, "ipam", strings.ReplaceAll(victim.node.PodCIDR, "/", "_"), victim.sb.IPs[0].String())
	if _, err := exec.Command("test", "-f", lease).CombinedOutput(); err != nil {
		t.Fatalf("no lease file %s for %s", lease, victim.name)
	}
	if err := suite.CP.Client.CoreV1().Pods(ns).Delete(ctx, victim.name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "pod "+victim.name+" gone and its lease freed", func() bool {
		_, err := suite.CP.Client.CoreV1().Pods(ns).Get(ctx, victim.name, metav1.GetOptions{})
		return apierrors.IsNotFound(err) && exec.Command("test", "-e", lease).Run() != nil
	})

	// Deleting a Node removes the routes to its pods on the others.
	gone := c.Nodes[2]
	routeTo := func(n *harness.Node) string {
		out, _ := n.NS.IPOutput("route", "show", gone.PodCIDR)
		return strings.TrimSpace(out)
	}
	if routeTo(c.Nodes[0]) == "" {
		t.Fatalf("%s has no route to %s's podCIDR %s", c.Nodes[0].Name, gone.Name, gone.PodCIDR)
	}
	if err := suite.CP.Client.CoreV1().Nodes().Delete(ctx, gone.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "route to the deleted node's podCIDR removed", func() bool {
		return routeTo(c.Nodes[0]) == "" && routeTo(c.Nodes[1]) == ""
	})
}

// poll waits for cond, failing the test after a minute.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return cond(), nil
	})
	if err != nil {
		t.Fatalf("never: %s", what)
	}
}

// TestChainedPortmap chains the reference portmap plugin after nodenet: it
// can only forward a hostPort if nodenet's result (prevResult) names the
// pod's address correctly.
func TestChainedPortmap(t *testing.T) {
	suite.Require(t)
	ctx := context.Background()
	n := suite.NewNode(t, "chain")
	cfg := strings.Replace(n.DefaultConfig(""), "[cni]\n", "[cni]\nchain = ['{\"type\":\"portmap\",\"capabilities\":{\"portMappings\":true},\"snat\":true}']\n", 1)
	if err := n.WriteConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(suite.Nodenet); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitReady(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	k, err := n.StartKubelet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ns := namespace(t, "chain")
	pod := podSpec(ns, "web", n.Name)
	pod.Spec.Containers[0].Ports[0].HostPort = 30080
	if _, err := suite.CP.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sb, err := k.WaitRunning(ctx, ns, "web")
	if err != nil {
		t.Fatalf("%v\n%s", err, k.Tail(20))
	}
	out, err := suite.CP.AddHost("out-chain")
	if err != nil {
		t.Fatal(err)
	}
	r, err := httpFrom(out.NS, net.JoinHostPort(n.IP.String(), "30080"))
	if err != nil {
		t.Fatalf("hostPort through portmap: %v", err)
	}
	if r.Pod != "web" {
		t.Errorf("hostPort answered by %q", r.Pod)
	}
	if len(sb.Result.IPs) != 1 || sb.Result.IPs[0].Address.IP.String() != sb.IPs[0].String() {
		t.Errorf("chain result: %+v", sb.Result)
	}
}
