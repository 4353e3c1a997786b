package services

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/nodenet/nodenet/test/harness"
)

// TestServices runs every behaviour on one 3-node cluster: backends web-a,
// web-b, web-c (one per node) and a client pod on node a.
func TestServices(t *testing.T) {
	suite.Require(t)
	// A short full-resync period, so repairs are observable.
	c := suite.StartCluster(t, "sv", 3, func(cfg string) string {
		return strings.Replace(cfg, "[reconcile]\n", "[reconcile]\nmax_interval = \"2s\"\n", 1)
	})
	e := &env{t: t, c: c, ns: "svc"}
	ctx := context.Background()
	if _, err := suite.CP.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = suite.CP.Client.CoreV1().Namespaces().Delete(context.Background(), e.ns, metav1.DeleteOptions{})
	})
	backends := map[string]*harness.Sandbox{}
	for _, n := range c.Nodes {
		name := "web-" + n.Name[len(n.Name)-1:]
		backends[name] = e.pod(name, n.Name, map[string]string{"app": "web"})
	}
	client := e.pod("client", c.Nodes[0].Name, map[string]string{"app": "client"})
	out, err := suite.CP.AddHost("sv-out")
	if err != nil {
		t.Fatal(err)
	}
	web := e.service("web", "web", nil)
	e.waitEndpoints("web", 3)
	all := []string{"web-a", "web-b", "web-c"}

	t.Run("ClusterIPFromPod", func(t *testing.T) {
		e := &env{t: t, c: c, ns: e.ns}
		seen := map[string]bool{}
		for range 30 {
			a := e.eventually("TCP to the ClusterIP from a pod", func() (harness.Answer, error) {
				return harness.HTTPFrom(client.NS, hostPort(clusterIP(web), 80))
			}, func(a harness.Answer) bool { return slices.Contains(all, a.Pod) })
			if a.Client != client.IPs[0].String() {
				t.Fatalf("backend saw %s, want the client pod's own %s (no masquerade)", a.Client, client.IPs[0])
			}
			seen[a.Pod] = true
		}
		if len(seen) < 2 {
			t.Errorf("30 connections all went to %v: no load spreading", seen)
		}
		a, err := harness.UDPFrom(client.NS, hostPort(clusterIP(web), 81))
		if err != nil || !slices.Contains(all, a.Pod) {
			t.Errorf("UDP to the ClusterIP: %+v %v", a, err)
		}
	})

	t.Run("ClusterIPFromNode", func(t *testing.T) {
		e := &env{t: t, c: c, ns: e.ns}
		for _, n := range c.Nodes {
			e.eventually("TCP to the ClusterIP from node "+n.Name, func() (harness.Answer, error) {
				return harness.HTTPFrom(n.NS, hostPort(clusterIP(web), 80))
			}, func(a harness.Answer) bool { return slices.Contains(all, a.Pod) })
		}
	})

	t.Run("NodePortOnEveryNode", func(t *testing.T) {
		e := &env{t: t, c: c, ns: e.ns}
		np := e.service("web-np", "web", func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeNodePort })
		port := nodePort(np, "http")
		for _, n := range c.Nodes {
			e.eventually("NodePort on "+n.Name+" from outside", func() (harness.Answer, error) {
				return harness.HTTPFrom(out.NS, hostPort(n.IP.String(), port))
			}, func(a harness.Answer) bool { return slices.Contains(all, a.Pod) })
		}
		udp := nodePort(np, "dns")
		if a, err := harness.UDPFrom(out.NS, hostPort(c.Nodes[1].IP.String(), udp)); err != nil || !slices.Contains(all, a.Pod) {
			t.Errorf("UDP NodePort: %+v %v", a, err)
		}
	})

	t.Run("NoEndpointsRejectsAtOnce", func(t *testing.T) {
		e := &env{t: t, c: c, ns: e.ns}
		empty := e.service("empty", "nobody", nil)
		// Wait until the rules are in, then time fresh connections from a
		// pod and from the node.
		e.eventually("connection to an endpoint-less service refused", func() (harness.Answer, error) {
			_, err := harness.HTTPFrom(client.NS, hostPort(clusterIP(empty), 80))
			if err == nil {
				return harness.Answer{Pod: "answered"}, nil
			}
			return harness.Answer{Pod: err.Error()}, nil
		}, func(a harness.Answer) bool { return strings.Contains(a.Pod, "connection refused") })
		for _, src := range []*harness.NS{client.NS, c.Nodes[0].NS} {
			start := time.Now()
			_, err := harness.HTTPFrom(src, hostPort(clusterIP(empty), 80))
			elapsed := time.Since(start)
			if err == nil || !strings.Contains(err.Error(), "connection refused") || elapsed > 100*time.Millisecond {
				t.Errorf("from %s: %v after %s, want connection refused at once", src.Name, err, elapsed)
			}
			t.Logf("from %s refused in %s", src.Name, elapsed)
		}
	})

	t.Run("SessionAffinity", func(t *testing.T) {
		e := &env{t: t, c: c, ns: e.ns}
		sticky := e.service("sticky", "web", func(s *corev1.Service) { s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP })
		first := e.eventually("sticky service answers", func() (harness.Answer, error) {
			return harness.HTTPFrom(client.NS, hostPort(clusterIP(sticky), 80))
		}, func(a harness.Answer) bool { return slices.Contains(all, a.Pod) })
		for range 20 {
			a, err := harness.HTTPFrom(client.NS, hostPort(clusterIP(sticky), 80))
			if err != nil || a.Pod != first.Pod {
				t.Fatalf("affinity broken: %+v %v, first answer from %s", a, err, first.Pod)
			}
		}
	})

	t.Run("ExternalTrafficPolicyLocal", func(t *testing.T) {
		e := &env{t: t, c: c, ns: e.ns}
		local := e.service("local", "web", func(s *corev1.Service) {
			// Only LoadBalancer services get a health check node port.
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		})
		port := nodePort(local, "http")
		for _, n := range c.Nodes {
			want := "web-" + n.Name[len(n.Name)-1:]
			a := e.eventually("Local NodePort on "+n.Name, func() (harness.Answer, error) {
				return harness.HTTPFrom(out.NS, hostPort(n.IP.String(), port))
			}, func(a harness.Answer) bool { return a.Pod == want })
			if a.Client != out.IP.String() {
				t.Errorf("Local policy: backend saw %s, want the client's own %s", a.Client, out.IP)
			}
		}
		// The health check node port answers with the local endpoint count.
		hc := int(local.Spec.HealthCheckNodePort)
		if hc == 0 {
			t.Fatal("no healthCheckNodePort allocated")
		}
		code, body := healthCheck(t, out.NS, c.Nodes[0].IP.String(), hc)
		if code != 200 || body.LocalEndpoints != 1 || body.Service.Name != "local" {
			t.Errorf("health check: %d %+v", code, body)
		}
	})

	t.Run("InternalTrafficPolicyLocal", func(t *testing.T) {
		e := &env{t: t, c: c, ns: e.ns}
		internal := e.service("internal", "web", func(s *corev1.Service) {
			p := corev1.ServiceInternalTrafficPolicyLocal
			s.Spec.InternalTrafficPolicy = &p
		})
		for range 10 {
			e.eventually("internal Local: only the client node's backend", func() (harness.Answer, error) {
				return harness.HTTPFrom(client.NS, hostPort(clusterIP(internal), 80))
			}, func(a harness.Answer) bool { return a.Pod == "web-a" })
		}
	})

	t.Run("Hairpin", func(t *testing.T) {
		e := &env{t: t, c: c, ns: e.ns}
		self := e.service("self", "client", nil)
		e.waitEndpoints("self", 1)
		e.eventually("a pod reaches itself through its own Service", func() (harness.Answer, error) {
			return harness.HTTPFrom(client.NS, hostPort(clusterIP(self), 80))
		}, func(a harness.Answer) bool { return a.Pod == "client" && a.Client != client.IPs[0].String() })
	})

	t.Run("ScaleAndDelete", func(t *testing.T) {
		e := &env{t: t, c: c, ns: e.ns}
		scale := e.service("scale", "scale", nil)
		e.pod("scale-1", c.Nodes[1].Name, map[string]string{"app": "scale"})
		e.waitEndpoints("scale", 1)
		e.eventually("one endpoint", func() (harness.Answer, error) {
			return harness.HTTPFrom(client.NS, hostPort(clusterIP(scale), 80))
		}, func(a harness.Answer) bool { return a.Pod == "scale-1" })
		e.pod("scale-2", c.Nodes[2].Name, map[string]string{"app": "scale"})
		e.waitEndpoints("scale", 2)
		e.eventually("the new endpoint is used", func() (harness.Answer, error) {
			return harness.HTTPFrom(client.NS, hostPort(clusterIP(scale), 80))
		}, func(a harness.Answer) bool { return a.Pod == "scale-2" })
		e.deletePod("scale-1")
		e.waitEndpoints("scale", 1)
		for range 10 {
			e.eventually("the removed endpoint is no longer used", func() (harness.Answer, error) {
				return harness.HTTPFrom(client.NS, hostPort(clusterIP(scale), 80))
			}, func(a harness.Answer) bool { return a.Pod == "scale-2" })
		}
		if err := suite.CP.Client.CoreV1().Services(e.ns).Delete(context.Background(), "scale", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		e.eventually("a deleted service stops answering", func() (harness.Answer, error) {
			a, err := harness.HTTPFrom(client.NS, hostPort(clusterIP(scale), 80))
			if err != nil {
				return harness.Answer{Pod: "no answer"}, nil
			}
			return a, nil
		}, func(a harness.Answer) bool { return a.Pod == "no answer" })
	})

	t.Run("UDPSurvivesEndpointChange", func(t *testing.T) {
		e := &env{t: t, c: c, ns: e.ns}
		svc := e.service("udp", "udp", nil)
		e.pod("udp-1", c.Nodes[1].Name, map[string]string{"app": "udp"})
		e.waitEndpoints("udp", 1)
		conn, err := client.NS.DialContext(context.Background(), "udp", hostPort(clusterIP(svc), 81))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// One socket, one source port: one conntrack entry throughout.
		e.eventually("UDP answers from udp-1", func() (harness.Answer, error) {
			return harness.AskUDP(conn, time.Second)
		}, func(a harness.Answer) bool { return a.Pod == "udp-1" })
		e.pod("udp-2", c.Nodes[2].Name, map[string]string{"app": "udp"})
		e.deletePod("udp-1")
		e.waitEndpoints("udp", 1)
		e.eventually("the same UDP flow moves to udp-2", func() (harness.Answer, error) {
			return harness.AskUDP(conn, time.Second)
		}, func(a harness.Answer) bool { return a.Pod == "udp-2" })
	})

	t.Run("LoadBalancerIPAndSourceRanges", func(t *testing.T) {
		e := &env{t: t, c: c, ns: e.ns}
		lb := e.service("lb", "web", func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			s.Spec.LoadBalancerSourceRanges = []string{out.IP.String() + "/32"}
		})
		lbIP := "10.250.0.200"
		lb.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: lbIP}}
		if _, err := suite.CP.Client.CoreV1().Services(e.ns).UpdateStatus(context.Background(), lb, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		other, err := suite.CP.AddHost("sv-out2")
		if err != nil {
			t.Fatal(err)
		}
		// The load balancer's address is routed to node b, as a BGP or L2
		// announcement would.
		for _, h := range []*harness.Host{out, other} {
			if err := h.NS.IP("route", "replace", lbIP, "via", c.Nodes[1].IP.String()); err != nil {
				t.Fatal(err)
			}
		}
		e.eventually("LB IP from an allowed source", func() (harness.Answer, error) {
			return harness.HTTPFrom(out.NS, hostPort(lbIP, 80))
		}, func(a harness.Answer) bool { return slices.Contains(all, a.Pod) })
		if err := noConnection(other.NS, hostPort(lbIP, 80)); err != nil {
			t.Errorf("LB IP from a source outside loadBalancerSourceRanges: %v", err)
		}
	})

	t.Run("ExternalIPs", func(t *testing.T) {
		e := &env{t: t, c: c, ns: e.ns}
		extIP := "10.250.0.201"
		e.service("ext", "web", func(s *corev1.Service) { s.Spec.ExternalIPs = []string{extIP} })
		if err := out.NS.IP("route", "replace", extIP, "via", c.Nodes[2].IP.String()); err != nil {
			t.Fatal(err)
		}
		e.eventually("externalIP from outside", func() (harness.Answer, error) {
			return harness.HTTPFrom(out.NS, hostPort(extIP, 80))
		}, func(a harness.Answer) bool { return slices.Contains(all, a.Pod) })
	})

	t.Run("FlushedChainRepairedByResync", func(t *testing.T) {
		e := &env{t: t, c: c, ns: e.ns}
		n := c.Nodes[0]
		ask := func() (harness.Answer, error) { return harness.HTTPFrom(n.NS, hostPort(clusterIP(web), 80)) }
		e.eventually("ClusterIP from node a", ask, func(a harness.Answer) bool { return slices.Contains(all, a.Pod) })
		flushed := time.Now()
		if _, err := n.NS.Exec(context.Background(), "iptables", "-t", "nat", "-F", "NODENET-SERVICES"); err != nil {
			t.Fatal(err)
		}
		if err := noConnection(n.NS, hostPort(clusterIP(web), 80)); err != nil {
			t.Fatalf("flushing NODENET-SERVICES did not break the service: %v", err)
		}
		e.eventually("repaired by the periodic full resync", ask, func(a harness.Answer) bool { return slices.Contains(all, a.Pod) })
		t.Logf("answering again %s after the flush (full resync every 2s)", time.Since(flushed).Round(time.Millisecond))
	})

	// The metrics a kube-proxy user looks for.
	_, metrics, err := c.Nodes[0].Admin("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`nodenet_proxy_rules{family="IPv4",table="nat"}`, `nodenet_reconcile_duration_seconds_count{component="proxy",kind="partial"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

type healthBody struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints int `json:"localEndpoints"`
}

func healthCheck(t *testing.T, ns *harness.NS, ip string, port int) (int, healthBody) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: ns.DialContext}}
	var resp *http.Response
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		var err error
		resp, err = c.Get("http://" + hostPort(ip, port) + "/healthz")
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("health check %s:%d never answered", ip, port)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body healthBody
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("health check body %q: %v", b, err)
	}
	return resp.StatusCode, body
}

// noConnection checks that no TCP connection to addr can be made from ns
// within a second.
func noConnection(ns *harness.NS, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := ns.DialContext(ctx, "tcp", addr)
	if err == nil {
		c.Close()
		return fmt.Errorf("connected to %s", addr)
	}
	return nil
}
