package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// Node is a test node: a network namespace on the underlay, a Node object,
// and (once started) a nodenet daemon running inside the namespace.
type Node struct {
	Name       string
	NS         *NS
	IP         netip.Addr
	Dir        string
	Config     string // path of the daemon's config file
	Socket     string // control socket
	Kubeconfig string
	PodCIDR    string
	CNIConfDir string // the daemon writes its conflist here
	CNIBinDir  string // nodenet (as the plugin) and the reference plugins
	StateDir   string
	Daemon     *Proc

	cp      *ControlPlane
	bin     string
	kubelet *Kubelet // started by StartKubelet; remove stops it first
}

// AddNode creates the node's namespace, registers its Node object and waits
// for the controller manager to assign its podCIDR. The daemon is not started.
func (cp *ControlPlane) AddNode(ctx context.Context, name string) (*Node, error) {
	cp.mu.Lock()
	ip := cp.nextIP
	cp.nextIP = ip.Next()
	cp.mu.Unlock()
	dir, err := os.MkdirTemp("", Prefix+name+"-")
	if err != nil {
		return nil, err
	}
	n := &Node{Name: name, IP: ip, Dir: dir, cp: cp,
		Config:     filepath.Join(dir, "config.toml"),
		Socket:     filepath.Join(dir, "nodenet.sock"),
		Kubeconfig: filepath.Join(dir, "kubeconfig"),
		CNIConfDir: filepath.Join(dir, "net.d"),
		CNIBinDir:  filepath.Join(dir, "cni-bin"),
		StateDir:   filepath.Join(dir, "state"),
	}
	cp.mu.Lock()
	cp.nodes = append(cp.nodes, n)
	cp.mu.Unlock()
	if n.NS, err = NewNS(Prefix + name); err != nil {
		return nil, err
	}
	if err := cp.plug(n.NS, "u-"+name, ip); err != nil {
		return nil, err
	}
	// A node has a default gateway; local traffic to a ClusterIP needs a
	// route before OUTPUT's DNAT rewrites it. The control plane's address
	// stands in for the gateway (it does not forward).
	if err := n.NS.IP("route", "add", "default", "via", cp.IP.String()); err != nil {
		return nil, err
	}
	if err := cp.NodeCredentials(name, n.Kubeconfig); err != nil {
		return nil, err
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: ip.String()},
			{Type: corev1.NodeHostName, Address: name},
		}},
	}
	created, err := cp.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("register node %s: %w", name, err)
	}
	if len(created.Status.Addresses) == 0 {
		created.Status = node.Status
		if _, err := cp.Client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			return nil, fmt.Errorf("node %s status: %w", name, err)
		}
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		got, err := cp.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		n.PodCIDR = got.Spec.PodCIDR
		return n.PodCIDR != "", nil
	})
	if err != nil {
		return nil, fmt.Errorf("node %s got no podCIDR: %w\n%s", name, err, cp.Logs(20))
	}
	return n, nil
}

// DefaultConfig is the daemon config the harness writes for a node; extra is
// appended verbatim (TOML).
func (n *Node) DefaultConfig(extra string) string {
	return fmt.Sprintf(`# written by the nodenet test harness
[node]
name = %q

[kubernetes]
kubeconfig = %q

[network]
cluster_cidrs = [%q]
service_cidrs = [%q]

[cni]
conf_dir = %q
state_dir = %q

[reconcile]
min_interval = "50ms"

[log]
level = "debug"

[admin]
listen = "127.0.0.1:9490"
control_socket = %q
`, n.Name, n.Kubeconfig, n.cp.Opts.ClusterCIDR, n.cp.Opts.ServiceCIDR, n.CNIConfDir, n.StateDir, n.Socket) + extra
}

// WriteConfig replaces the daemon's config file.
func (n *Node) WriteConfig(content string) error {
	return os.WriteFile(n.Config, []byte(content), 0o600)
}

// Start writes the default config (unless one exists) and starts `nodenet run`
// inside the node namespace. The CNI bin dir gets the binary as the plugin
// "nodenet", as a node's /opt/cni/bin would.
func (n *Node) Start(bin string) error {
	n.bin = bin
	if err := n.installCNIBin(bin); err != nil {
		return err
	}
	if _, err := os.Stat(n.Config); os.IsNotExist(err) {
		if err := n.WriteConfig(n.DefaultConfig("")); err != nil {
			return err
		}
	}
	p, err := StartProc(n.NS, "nodenet-"+n.Name, filepath.Join(n.Dir, "nodenet.log"), bin, "run", "--config", n.Config)
	if err != nil {
		return err
	}
	n.Daemon = p
	return nil
}

// Signal sends sig to the daemon.
func (n *Node) Signal(sig syscall.Signal) error { return n.Daemon.Signal(sig) }

// Stop stops the daemon gracefully.
func (n *Node) Stop() error {
	if n.Daemon == nil {
		return nil
	}
	return n.Daemon.Stop(30 * time.Second)
}

// HTTPClient dials from inside the node namespace (for the admin listener).
func (n *Node) HTTPClient() *http.Client {
	return &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{DialContext: n.NS.DialContext, DisableKeepAlives: true},
	}
}

// Admin GETs a path on the daemon's admin listener and returns code and body.
func (n *Node) Admin(path string) (int, string, error) {
	resp, err := n.HTTPClient().Get("http://127.0.0.1:9490" + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// Status runs `nodenet status --json` against the daemon's socket, as an
// operator would, and decodes it into v.
func (n *Node) Status(ctx context.Context, v any) error {
	out, err := exec.CommandContext(ctx, n.bin, "status", "--json", "--socket", n.Socket).Output()
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		return fmt.Errorf("nodenet status: %v: %s", err, ee.Stderr)
	}
	if err != nil {
		return fmt.Errorf("nodenet status: %w", err)
	}
	return json.Unmarshal(out, v)
}

// StatusText runs `nodenet status` and returns the readable summary.
func (n *Node) StatusText(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, n.bin, "status", "--socket", n.Socket).CombinedOutput()
	return string(out), err
}

// WaitLog waits until the daemon's log contains s.
func (n *Node) WaitLog(ctx context.Context, s string, timeout time.Duration) error {
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		return strings.Contains(n.Daemon.Log(), s), nil
	})
	if err != nil {
		return fmt.Errorf("%s: log never said %q: %w\n%s", n.Name, s, err, n.Daemon.Tail(40))
	}
	return nil
}

// WaitReady waits until /readyz answers 200.
func (n *Node) WaitReady(ctx context.Context, timeout time.Duration) error {
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		if n.Daemon.Exited() {
			return false, fmt.Errorf("daemon exited: %v", n.Daemon.ExitErr())
		}
		code, _, err := n.Admin("/readyz")
		return err == nil && code == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("%s not ready: %w\n%s", n.Name, err, n.Daemon.Tail(40))
	}
	return nil
}

// Remove stops the daemon, deletes the Node object and the namespace.
func (n *Node) Remove(ctx context.Context) error {
	err := n.remove()
	if derr := n.cp.Client.CoreV1().Nodes().Delete(ctx, n.Name, metav1.DeleteOptions{}); derr != nil && !apierrors.IsNotFound(derr) && err == nil {
		err = derr
	}
	n.cp.mu.Lock()
	for i, m := range n.cp.nodes {
		if m == n {
			n.cp.nodes = append(n.cp.nodes[:i], n.cp.nodes[i+1:]...)
			break
		}
	}
	n.cp.mu.Unlock()
	return err
}

func (n *Node) remove() error {
	var errs []string
	// Before the daemon and the namespace go: the stand-in's CNI DELs run in
	// the node namespace and nodenet's plugin needs its daemon.
	if n.kubelet != nil {
		if err := n.kubelet.Stop(); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if n.Daemon != nil && !n.Daemon.Exited() {
		if err := n.Daemon.Stop(30 * time.Second); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if n.NS != nil {
		if err := n.NS.Delete(); err != nil {
			errs = append(errs, err.Error())
		}
		// The underlay end of the veth goes with its peer.
	}
	if err := os.RemoveAll(n.Dir); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		return fmt.Errorf("remove node %s: %s", n.Name, strings.Join(errs, "; "))
	}
	return nil
}

// DialTCP connects from the node namespace.
func (n *Node) DialTCP(ctx context.Context, addr string) (net.Conn, error) {
	return n.NS.DialContext(ctx, "tcp", addr)
}

// installCNIBin links nodenet and the reference plugins into CNIBinDir.
func (n *Node) installCNIBin(bin string) error {
	if err := os.MkdirAll(n.CNIBinDir, 0o755); err != nil {
		return err
	}
	links := map[string]string{"nodenet": bin}
	for _, p := range []string{"bridge", "host-local", "portmap"} {
		links[p] = filepath.Join(n.cp.Bin, p)
	}
	for name, target := range links {
		path := filepath.Join(n.CNIBinDir, name)
		_ = os.Remove(path)
		if err := os.Symlink(target, path); err != nil {
			return err
		}
	}
	return nil
}
