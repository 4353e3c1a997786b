package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

const testNetName = "harness-ref"

// refConfList is the reference-plugin network: bridge + host-local, then
// portmap, as a typical runtime setup chains them.
func refConfList(podCIDR, ipamDir string) string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": %q,
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": %q}
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, testNetName, podCIDR, ipamDir)
}

func testPod(node, name string, hostPort int32) *corev1.Pod {
	no := false
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Labels: map[string]string{"app": "harness"}},
		Spec: corev1.PodSpec{
			NodeName:                     node,
			AutomountServiceAccountToken: &no,
			Containers: []corev1.Container{{
				Name: "main", Image: "none", Command: []string{"sleep", "infinity"},
				Ports: []corev1.ContainerPort{
					{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP, HostPort: hostPort},
					{Name: "echo", ContainerPort: 81, Protocol: corev1.ProtocolUDP},
				},
			}},
		},
	}
}

// cniRootLines returns the root namespace's iptables-save lines that mention
// CNI or portmap chains. Counters are left out (-save without -c).
func cniRootLines(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("iptables-save").Output()
	if err != nil {
		t.Fatalf("iptables-save in the root namespace: %v", err)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		low := strings.ToLower(l)
		if strings.Contains(low, "cni") || strings.Contains(low, "hostport") || strings.Contains(low, "portmap") {
			lines = append(lines, l)
		}
	}
	return lines
}

func udpAsk(ctx context.Context, from *NS, addr string) (string, error) {
	c, err := from.DialContext(ctx, "udp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	buf := make([]byte, 512)
	for range 5 { // UDP: a lost first datagram (ARP) is no failure
		if _, err := c.Write([]byte("who")); err != nil {
			return "", err
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		if err == nil {
			return string(buf[:n]), nil
		}
	}
	return "", fmt.Errorf("no UDP answer from %s", addr)
}

func httpGet(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), url string) (string, http.Header, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), resp.Header, err
}

// refuseFailedADD serves a network whose only plugin fails with a CNI error
// and records the namespace it ran in: the failure must be recorded as the
// plugin's error, leave no pod namespace, and the plugin must have run in the
// node namespace. The failing conflist is removed again.
func refuseFailedADD(ctx context.Context, t *testing.T, n *Node, k *Kubelet) {
	t.Helper()
	seen := filepath.Join(n.Dir, "refuse-netns")
	script := "#!/bin/sh\nreadlink /proc/self/ns/net > " + seen + "\n" +
		`echo '{"cniVersion":"1.0.0","code":7,"msg":"refused by test"}'` + "\nexit 1\n"
	if err := os.WriteFile(filepath.Join(n.CNIBinDir, "refuse"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(n.CNIConfDir, "05-refuse.conflist")
	if err := os.WriteFile(conf, []byte(`{"cniVersion":"1.0.0","name":"refuse","plugins":[{"type":"refuse"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, pod := range []string{"a", "b"} {
		var cniErr *types.Error
		if err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
			return errors.As(k.LastError("default", pod), &cniErr), nil
		}); err != nil || cniErr.Code != 7 || cniErr.Msg != "refused by test" {
			t.Errorf("pod %s: failed ADD recorded as %v, want the plugin's CNI error 7", pod, k.LastError("default", pod))
		}
	}
	// Both pods failed; each retries 1s after its failure at the earliest.
	names, err := listNS()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if strings.HasPrefix(name, Prefix+"p") {
			t.Errorf("pod namespace %s left after a failed ADD", name)
		}
	}
	want, err := n.NS.Exec(ctx, "readlink", "/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(seen); err != nil || string(got) != want {
		t.Errorf("plugin ran in netns %q, want the node's %q (%v)", got, want, err)
	}
	if err := os.Remove(conf); err != nil {
		t.Fatal(err)
	}
}

// TestKubeletStandIn validates the kubelet stand-in with the reference
// plugins, independently of nodenet: pods get sandboxes, serve, are reported
// Running/Ready, are torn down and finalized on deletion, and the plugins
// ran in the node namespace only.
func TestKubeletStandIn(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and runs CNI plugins in them")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // first run may build the plugins
	defer cancel()
	cp, err := StartControlPlane(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	cpStopped := false
	defer func() {
		if !cpStopped {
			cp.Stop()
		}
	}()
	n, err := cp.AddNode(ctx, "k1")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.installCNIBin("/bin/true"); err != nil {
		t.Fatal(err)
	}
	ipamDir := filepath.Join(n.Dir, "ipam")
	if err := os.MkdirAll(n.CNIConfDir, 0o755); err != nil {
		t.Fatal(err)
	}
	rootBefore := cniRootLines(t)
	_, rootBridgeErr := net.InterfaceByName("cni0")

	k, err := n.StartKubelet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Stop()
	// The pods must exist before the network is ready, and start once it is.
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := cp.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		t.Fatalf("no default service account: %v", err)
	}
	for _, p := range []*corev1.Pod{testPod(n.Name, "a", 8080), testPod(n.Name, "b", 0)} {
		if _, err := cp.Client.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create pod %s: %v", p.Name, err)
		}
	}
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return errors.Is(k.LastError("default", "a"), errNetworkNotReady), nil
	}); err != nil {
		t.Errorf("no 'network not ready' error recorded before the conflist exists: %v", k.LastError("default", "a"))
	}
	refuseFailedADD(ctx, t, n, k)
	if err := os.WriteFile(filepath.Join(n.CNIConfDir, "10-ref.conflist"), []byte(refConfList(n.PodCIDR, ipamDir)), 0o644); err != nil {
		t.Fatal(err)
	}

	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	a, err := k.WaitRunning(wctx, "default", "a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := k.WaitRunning(wctx, "default", "b")
	if err != nil {
		t.Fatal(err)
	}
	if k.LastError("default", "a") != nil {
		t.Errorf("pod a runs but LastError = %v", k.LastError("default", "a"))
	}
	for _, sb := range []*Sandbox{a, b} {
		pod, err := cp.Client.CoreV1().Pods("default").Get(ctx, sb.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ready := slices.ContainsFunc(pod.Status.Conditions, func(c corev1.PodCondition) bool {
			return c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue
		})
		if pod.Status.PodIP != sb.IPs[0].String() || !ready || pod.Status.Phase != corev1.PodRunning || pod.Status.HostIP != n.IP.String() {
			t.Errorf("pod %s status: phase %s podIP %q (sandbox %v) hostIP %q ready %v", sb.Name, pod.Status.Phase, pod.Status.PodIP, sb.IPs, pod.Status.HostIP, ready)
		}
		if err := k.Check(ctx, "default", sb.Name); err != nil {
			t.Errorf("CHECK: %v", err)
		}
	}

	// Pod to pod over the bridge: B answers and sees A's own address.
	bAddr := net.JoinHostPort(b.IPs[0].String(), "80")
	body, hdr, err := httpGet(ctx, a.NS.DialContext, "http://"+bAddr+"/")
	if err != nil {
		t.Fatalf("HTTP a -> b: %v\n%s", err, k.Tail(20))
	}
	if want := "b " + a.IPs[0].String() + ":"; !strings.HasPrefix(body, want) || hdr.Get("X-Pod-Name") != "b" {
		t.Errorf("HTTP a -> b: body %q header %q, want %q...", body, hdr.Get("X-Pod-Name"), want)
	}
	if c, err := a.NS.DialContext(ctx, "tcp", bAddr); err != nil {
		t.Errorf("raw TCP a -> b: %v", err)
	} else {
		_, _ = io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		raw, _ := io.ReadAll(bufio.NewReader(c))
		c.Close()
		if !strings.Contains(string(raw), "\r\n\r\nb "+a.IPs[0].String()+":") {
			t.Errorf("raw TCP a -> b answered %q", raw)
		}
	}
	got, err := udpAsk(ctx, a.NS, net.JoinHostPort(b.IPs[0].String(), "81"))
	if want := "b " + a.IPs[0].String() + ":"; err != nil || !strings.HasPrefix(got, want) {
		t.Errorf("UDP a -> b: %q, %v; want %q...", got, err, want)
	}
	// A's hostPort, through portmap's DNAT in the node namespace, from the
	// control plane's namespace on the underlay.
	body, _, err = httpGet(ctx, cp.NS.DialContext, "http://"+net.JoinHostPort(n.IP.String(), "8080")+"/")
	if want := "a " + cp.IP.String() + ":"; err != nil || !strings.HasPrefix(body, want) {
		t.Errorf("hostPort node:8080 -> a: %q, %v; want %q...", body, err, want)
	}
	if out, err := n.NS.Exec(ctx, "iptables-save"); err != nil || !strings.Contains(out, "CNI-HOSTPORT-DNAT") {
		t.Errorf("portmap rules not in the node namespace (%v):\n%s", err, out)
	}

	// Deleting B: sandbox gone, IP released, Pod object finalized.
	bLease := filepath.Join(ipamDir, testNetName, b.IPs[0].String())
	if _, err := os.Stat(bLease); err != nil {
		t.Errorf("host-local lease of b: %v", err)
	}
	if err := cp.Client.CoreV1().Pods("default").Delete(ctx, "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := cp.Client.CoreV1().Pods("default").Get(ctx, "b", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	}); err != nil {
		t.Fatalf("pod b still in the API: %v\n%s", err, k.Tail(20))
	}
	if _, ok := k.Sandbox("default", "b"); ok {
		t.Errorf("pod b still has a sandbox")
	}
	for _, path := range []string{"/run/netns/" + b.NS.Name, bLease} {
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("%s still there after pod b's deletion (%v)", path, err)
		}
	}
	if _, ok := k.Sandbox("default", "a"); !ok {
		t.Errorf("pod a lost its sandbox")
	}

	if extra := slices.DeleteFunc(cniRootLines(t), func(l string) bool { return slices.Contains(rootBefore, l) }); len(extra) > 0 {
		t.Errorf("CNI plugins changed the ROOT namespace's iptables:\n%s", strings.Join(extra, "\n"))
	}
	if _, err := net.InterfaceByName("cni0"); err == nil && rootBridgeErr != nil {
		t.Errorf("bridge cni0 appeared in the ROOT namespace")
	}

	// Stop tears down what is left without API writes; then nothing remains.
	aLease := filepath.Join(ipamDir, testNetName, a.IPs[0].String())
	if err := k.Stop(); err != nil {
		t.Errorf("kubelet stop: %v", err)
	}
	if err := k.Stop(); err != nil {
		t.Errorf("second kubelet stop: %v", err)
	}
	for _, path := range []string{"/run/netns/" + a.NS.Name, aLease} {
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("%s still there after kubelet stop (%v)", path, err)
		}
	}
	if pod, err := cp.Client.CoreV1().Pods("default").Get(ctx, "a", metav1.GetOptions{}); err != nil || pod.DeletionTimestamp != nil {
		t.Errorf("kubelet stop touched pod a in the API: %v", err)
	}
	t.Logf("kubelet log:\n%s", k.Tail(40))
	cpStopped = true
	if err := cp.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := LeakCheck(); err != nil {
		t.Fatal(err)
	}
}
