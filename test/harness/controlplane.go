package harness

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Options shape the test cluster.
type Options struct {
	ClusterCIDR string // default 10.244.0.0/16
	ServiceCIDR string // default 10.96.0.0/16
	NodeMask    int    // default 24
}

func (o *Options) defaults() {
	if o.ClusterCIDR == "" {
		o.ClusterCIDR = "10.244.0.0/16"
	}
	if o.ServiceCIDR == "" {
		o.ServiceCIDR = "10.96.0.0/16"
	}
	if o.NodeMask == 0 {
		o.NodeMask = 24
	}
}

// The underlay: every node and the control plane have one address on it.
var (
	underlayPrefix = netip.MustParsePrefix("10.250.0.0/24")
	controlPlaneIP = netip.MustParseAddr("10.250.0.1")
)

// ControlPlane is etcd + kube-apiserver + kube-controller-manager running in
// their own namespace on the underlay.
type ControlPlane struct {
	Opts     Options
	Dir      string
	Bin      string // directory with the control plane binaries
	Underlay *NS    // holds the bridge br0 every node is plugged into
	NS       *NS    // the control plane's namespace
	IP       netip.Addr
	URL      string

	Admin  *rest.Config // dials into the control plane namespace
	Client kubernetes.Interface
	// AdminKubeconfig works from inside the control plane namespace.
	AdminKubeconfig string

	pki *pki

	mu        sync.Mutex // guards the fields below
	etcd      *Proc
	apiserver *Proc
	kcm       *Proc
	nodes     []*Node
	hosts     []*Host
	nextIP    netip.Addr
}

// StartControlPlane brings up a fresh control plane and waits until it serves.
// Call Stop to remove everything, also when the caller fails.
func StartControlPlane(ctx context.Context, opts Options) (cp *ControlPlane, err error) {
	opts.defaults()
	if err := CleanupStale(); err != nil {
		return nil, fmt.Errorf("remove stale test state: %w", err)
	}
	bin, err := ClusterBinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", Prefix+"cp-")
	if err != nil {
		return nil, err
	}
	cp = &ControlPlane{Opts: opts, Dir: dir, Bin: bin, IP: controlPlaneIP, nextIP: controlPlaneIP.Next().Next().Next().Next().Next().Next().Next().Next().Next()}
	cp.URL = "https://" + net.JoinHostPort(cp.IP.String(), "6443")
	defer func() {
		if err != nil {
			cp.Stop()
			cp = nil
		}
	}()
	if err := cp.setupNetwork(); err != nil {
		return cp, err
	}
	if err := cp.setupPKI(); err != nil {
		return cp, fmt.Errorf("pki: %w", err)
	}
	if cp.etcd, err = StartProc(cp.NS, "etcd", cp.path("etcd.log"), cp.binPath("etcd"),
		"--data-dir", cp.path("etcd"), "--listen-client-url", "http://127.0.0.1:2379", "--listen-peer-url", "http://127.0.0.1:2380"); err != nil {
		return cp, err
	}
	if err := cp.StartAPIServer(ctx); err != nil {
		return cp, err
	}
	if err := cp.Kubectl(ctx, "apply", "-f", filepath.Join(RepoRoot(), "systemd", "rbac.yaml")); err != nil {
		return cp, fmt.Errorf("apply nodenet RBAC: %w", err)
	}
	if cp.kcm, err = StartProc(cp.NS, "kube-controller-manager", cp.path("kcm.log"), cp.binPath("kube-controller-manager"),
		"--kubeconfig", cp.AdminKubeconfig,
		"--bind-address", "127.0.0.1",
		"--leader-elect=false",
		"--allocate-node-cidrs",
		"--cluster-cidr", opts.ClusterCIDR,
		"--node-cidr-mask-size", fmt.Sprint(opts.NodeMask),
		"--service-cluster-ip-range", opts.ServiceCIDR,
		// No kubelets here: leave out the node lifecycle controller, which
		// would taint the nodes and evict their pods.
		"--controllers", "nodeipam,endpointslice,endpointslicemirroring,namespace,garbagecollector,serviceaccount,serviceaccount-token",
		"--service-account-private-key-file", cp.pki.path("sa.key"),
		"--root-ca-file", cp.pki.path("ca.crt"),
		"--use-service-account-credentials=false",
		"--concurrent-service-endpoint-syncs", "10",
		"--v", "1",
	); err != nil {
		return cp, err
	}
	return cp, nil
}

func (cp *ControlPlane) path(name string) string    { return filepath.Join(cp.Dir, name) }
func (cp *ControlPlane) binPath(name string) string { return filepath.Join(cp.Bin, name) }

func (cp *ControlPlane) setupNetwork() error {
	var err error
	if cp.Underlay, err = NewNS(Prefix + "ul"); err != nil {
		return err
	}
	if err := cp.Underlay.IP("link", "add", "br0", "type", "bridge"); err != nil {
		return err
	}
	if err := cp.Underlay.IP("link", "set", "br0", "up"); err != nil {
		return err
	}
	if cp.NS, err = NewNS(Prefix + "cp"); err != nil {
		return err
	}
	return cp.plug(cp.NS, "cp", cp.IP)
}

// plug connects ns to the underlay bridge with a veth whose inside end is eth0.
func (cp *ControlPlane) plug(ns *NS, port string, ip netip.Addr) error {
	if err := cp.Underlay.IP("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns.Name); err != nil {
		return err
	}
	if err := cp.Underlay.IP("link", "set", port, "master", "br0", "up"); err != nil {
		return err
	}
	addr := netip.PrefixFrom(ip, underlayPrefix.Bits()).String()
	if err := ns.IP("addr", "add", addr, "dev", "eth0"); err != nil {
		return err
	}
	return ns.IP("link", "set", "eth0", "up")
}

func (cp *ControlPlane) setupPKI() error {
	p, err := newPKI(cp.Dir)
	if err != nil {
		return err
	}
	cp.pki = p
	if err := p.serviceAccountKey(); err != nil {
		return err
	}
	svc := netip.MustParsePrefix(cp.Opts.ServiceCIDR).Addr().Next()
	if _, _, err := p.issue("apiserver", pkix.Name{CommonName: "kube-apiserver"},
		[]net.IP{cp.IP.AsSlice(), net.IPv4(127, 0, 0, 1), svc.AsSlice()},
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"}, x509.ExtKeyUsageServerAuth); err != nil {
		return err
	}
	cert, key, err := p.issue("admin", pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}}, nil, nil, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return err
	}
	cp.AdminKubeconfig = cp.path("admin.kubeconfig")
	if err := writeKubeconfig(cp.AdminKubeconfig, "https://127.0.0.1:6443", p.CAPEM, cert, key); err != nil {
		return err
	}
	cp.Admin = &rest.Config{
		Host:            cp.URL,
		TLSClientConfig: rest.TLSClientConfig{CAData: p.CAPEM, CertData: cert, KeyData: key},
		Dial:            cp.NS.DialContext,
		QPS:             100,
		Burst:           200,
	}
	cp.Client, err = kubernetes.NewForConfig(cp.Admin)
	return err
}

// NodeCredentials issues a client certificate for a node's nodenet daemon, in
// the group the shipped RBAC binds, and writes a kubeconfig for it.
func (cp *ControlPlane) NodeCredentials(node, kubeconfig string) error {
	cert, key, err := cp.pki.issue("node-"+node, pkix.Name{CommonName: "nodenet:node:" + node, Organization: []string{"nodenet:nodes"}}, nil, nil, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return err
	}
	return writeKubeconfig(kubeconfig, cp.URL, cp.pki.CAPEM, cert, key)
}

func writeKubeconfig(path, server string, ca, cert, key []byte) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos["test"] = &clientcmdapi.AuthInfo{ClientCertificateData: cert, ClientKeyData: key}
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "test"}
	cfg.CurrentContext = "test"
	return clientcmd.WriteToFile(*cfg, path)
}

// StartAPIServer starts kube-apiserver (again) and waits until it is ready.
func (cp *ControlPlane) StartAPIServer(ctx context.Context) error {
	p := cp.pki
	proc, err := StartProc(cp.NS, "kube-apiserver", cp.path("apiserver.log"), cp.binPath("kube-apiserver"),
		"--etcd-servers", "http://127.0.0.1:2379",
		"--bind-address", "0.0.0.0",
		"--secure-port", "6443",
		"--advertise-address", cp.IP.String(),
		// No kubelets and no real node addresses: don't reconcile the
		// kubernetes Service's endpoints.
		"--endpoint-reconciler-type", "none",
		"--tls-cert-file", p.path("apiserver.crt"),
		"--tls-private-key-file", p.path("apiserver.key"),
		"--client-ca-file", p.path("ca.crt"),
		"--authorization-mode", "RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", p.path("sa.pub"),
		"--service-account-signing-key-file", p.path("sa.key"),
		"--service-cluster-ip-range", cp.Opts.ServiceCIDR,
		"--cert-dir", cp.path("apiserver-certs"),
		"--v", "1",
	)
	if err != nil {
		return err
	}
	cp.mu.Lock()
	cp.apiserver = proc
	cp.mu.Unlock()
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		if proc.Exited() {
			return false, fmt.Errorf("kube-apiserver exited: %v\n%s", proc.ExitErr(), proc.Tail(30))
		}
		body, err := cp.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && string(body) == "ok", nil
	})
	if err != nil {
		return fmt.Errorf("kube-apiserver not ready: %w\n%s", err, proc.Tail(20))
	}
	return nil
}

// StopAPIServer kills kube-apiserver, as a crash or a network cut would look
// to the daemons; etcd and the controller manager stay.
func (cp *ControlPlane) StopAPIServer() {
	cp.mu.Lock()
	p := cp.apiserver
	cp.apiserver = nil
	cp.mu.Unlock()
	if p != nil {
		p.Kill()
	}
}

// Kubectl runs kubectl as admin inside the control plane namespace.
func (cp *ControlPlane) Kubectl(ctx context.Context, args ...string) error {
	_, err := cp.NS.Exec(ctx, cp.binPath("kubectl"), append([]string{"--kubeconfig", cp.AdminKubeconfig}, args...)...)
	return err
}

// Stop removes everything the control plane and its nodes created.
func (cp *ControlPlane) Stop() error {
	var errs []error
	cp.mu.Lock()
	nodes := cp.nodes
	cp.nodes = nil
	cp.mu.Unlock()
	for _, n := range nodes {
		errs = append(errs, n.remove())
	}
	// Their state is thrown away: no need to wait for a graceful drain
	// (kube-apiserver holds watches open for a long time on SIGTERM).
	for _, p := range []*Proc{cp.kcm, cp.apiserver, cp.etcd} {
		if p != nil {
			p.Kill()
		}
	}
	for _, h := range cp.hosts {
		errs = append(errs, h.NS.Delete())
	}
	for _, ns := range []*NS{cp.NS, cp.Underlay} {
		if ns != nil {
			errs = append(errs, ns.Delete())
		}
	}
	errs = append(errs, os.RemoveAll(cp.Dir))
	return errors.Join(errs...)
}

// Logs returns the tail of each control plane log, for failure reports.
func (cp *ControlPlane) Logs(lines int) string {
	var b strings.Builder
	for _, p := range []*Proc{cp.etcd, cp.apiserver, cp.kcm} {
		if p != nil {
			fmt.Fprintf(&b, "==== %s\n%s\n", p.Name, p.Tail(lines))
		}
	}
	return b.String()
}

// RepoRoot finds the nodenet module root from the working directory.
func RepoRoot() string {
	dir, _ := os.Getwd()
	for d := dir; d != "/"; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && strings.HasPrefix(string(b), "module github.com/nodenet/nodenet\n") {
			return d
		}
	}
	return dir
}

// ClusterBinDir returns the directory with the control plane binaries,
// building them on first use (test/cluster/build.sh caches them).
func ClusterBinDir() (string, error) {
	if d := os.Getenv("NODENET_CLUSTER_BIN"); d != "" {
		return d, nil
	}
	out, err := exec.Command(filepath.Join(RepoRoot(), "test", "cluster", "build.sh")).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("build control plane: %v: %s", err, ee.Stderr)
		}
		return "", fmt.Errorf("build control plane: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// NodenetBinary returns a statically linked nodenet binary: $NODENET_BIN, or
// one built into dir.
func NodenetBinary(dir string) (string, error) {
	if b := os.Getenv("NODENET_BIN"); b != "" {
		return b, nil
	}
	out := filepath.Join(dir, "nodenet")
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build nodenet: %v: %s", err, b)
	}
	return out, nil
}

// Host is a plain machine on the underlay that is not a Kubernetes node:
// it stands in for the world outside the cluster.
type Host struct {
	Name string
	NS   *NS
	IP   netip.Addr
}

// AddHost plugs a namespace into the underlay with the next free address.
// Stop removes it.
func (cp *ControlPlane) AddHost(name string) (*Host, error) {
	cp.mu.Lock()
	ip := cp.nextIP
	cp.nextIP = ip.Next()
	cp.mu.Unlock()
	ns, err := NewNS(Prefix + name)
	if err != nil {
		return nil, err
	}
	h := &Host{Name: name, NS: ns, IP: ip}
	cp.mu.Lock()
	cp.hosts = append(cp.hosts, h)
	cp.mu.Unlock()
	if err := cp.plug(ns, "h-"+name, ip); err != nil {
		return nil, err
	}
	return h, nil
}
