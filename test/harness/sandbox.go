package harness

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	corev1 "k8s.io/api/core/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
)

// Sandbox is a pod's network sandbox as the kubelet stand-in set it up.
// It does not change once set up.
type Sandbox struct {
	Namespace, Name string
	UID             k8stypes.UID
	ContainerID     string
	NS              *NS // the pod's network namespace (the node's for hostNetwork pods)
	IPs             []netip.Addr
	Result          *types100.Result // the CNI ADD result; nil for hostNetwork pods
	Created         time.Time
}

// sandbox is a Sandbox with what tearing it down needs.
type sandbox struct {
	Sandbox
	hostNetwork bool // NS is the node's: no CNI, never deleted
	list        *libcni.NetworkConfigList
	rt          *libcni.RuntimeConf
	workload    *workload
}

// errNetworkNotReady means no conflist yet, as kubelet's NetworkReady=false:
// no sandbox is attempted and nothing counts as a failure.
var errNetworkNotReady = errors.New("network not ready: no *.conflist in the CNI config dir")

// cniTimeout bounds one plugin chain run. Plugin runs are not cancelled by
// Stop: a plugin killed halfway leaves state that only its own DEL knows.
const cniTimeout = 60 * time.Second

// podNSSeq numbers pod namespaces process-wide, so names stay short and unique
// across nodes and kubelet restarts.
var podNSSeq atomic.Uint64

// nodeExec runs CNI plugins inside the node's namespace, as the container
// runtime on that node would: whatever a plugin does to the host side
// (bridge, routes, iptables) lands in the node namespace, never in the root.
type nodeExec struct {
	ns  *NS
	log *log.Logger
}

var _ invoke.Exec = (*nodeExec)(nil)

func (e *nodeExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := e.ns.Command(ctx, pluginPath)
	cmd.Env = environ
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if stderr.Len() > 0 {
		e.log.Printf("plugin %s (%s) stderr: %s", filepath.Base(pluginPath), cniCommand(environ), strings.TrimSpace(stderr.String()))
	}
	if err != nil {
		return nil, pluginError(err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

func (e *nodeExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

func (e *nodeExec) Decode(b []byte) (version.PluginInfo, error) {
	var d version.PluginDecoder
	return d.Decode(b)
}

// pluginError turns a failed plugin run into the CNI error it printed on
// stdout, or one that says what else is known.
func pluginError(err error, stdout, stderr []byte) error {
	e := &types.Error{}
	switch {
	case len(stdout) > 0:
		if jerr := json.Unmarshal(stdout, e); jerr != nil {
			e.Msg = fmt.Sprintf("plugin failed (%v) and its output is no CNI error (%v): %q", err, jerr, stdout)
		}
	case len(stderr) > 0:
		e.Msg = fmt.Sprintf("plugin failed: %v: %s", err, strings.TrimSpace(string(stderr)))
	default:
		e.Msg = fmt.Sprintf("plugin failed with no message: %v", err)
	}
	return e
}

func cniCommand(environ []string) string {
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "CNI_COMMAND="); ok {
			return v
		}
	}
	return "?"
}

// confList loads the first *.conflist in the node's CNI config dir, in the
// order libcni (and so every runtime) picks it.
func (k *Kubelet) confList() (*libcni.NetworkConfigList, error) {
	files, err := libcni.ConfFiles(k.n.CNIConfDir, []string{".conflist"})
	if err != nil {
		return nil, fmt.Errorf("read CNI config dir: %w", err)
	}
	if len(files) == 0 {
		return nil, errNetworkNotReady
	}
	list, err := libcni.ConfListFromFile(files[0])
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", files[0], err)
	}
	return list, nil
}

// portMapping is the portmap plugin's "portMappings" capability entry.
type portMapping struct {
	HostPort      int32  `json:"hostPort"`
	ContainerPort int32  `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

func runtimeConf(pod *corev1.Pod, containerID, nsName string) *libcni.RuntimeConf {
	maps := []portMapping{} // `[]`, never null, like a runtime with no mappings
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.HostPort <= 0 {
				continue
			}
			proto := strings.ToLower(string(p.Protocol))
			if proto == "" {
				proto = "tcp"
			}
			maps = append(maps, portMapping{HostPort: p.HostPort, ContainerPort: p.ContainerPort, Protocol: proto, HostIP: p.HostIP})
		}
	}
	return &libcni.RuntimeConf{
		ContainerID: containerID,
		NetNS:       "/var/run/netns/" + nsName,
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", pod.Namespace},
			{"K8S_POD_NAME", pod.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", containerID},
			{"K8S_POD_UID", string(pod.UID)},
		},
		CapabilityArgs: map[string]any{"portMappings": maps},
	}
}

// setup creates the pod's sandbox: namespace, CNI ADD, workload. It is one
// transaction: whatever was taken is given back if a later step fails.
func (k *Kubelet) setup(pod *corev1.Pod) (_ *sandbox, err error) {
	sb := &sandbox{Sandbox: Sandbox{
		Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID,
		ContainerID: randomHex(32), Created: time.Now(),
	}}
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	if pod.Spec.HostNetwork {
		sb.hostNetwork, sb.NS, sb.IPs = true, k.n.NS, []netip.Addr{k.n.IP}
	} else {
		if sb.list, err = k.confList(); err != nil {
			return nil, err
		}
		if sb.NS, err = NewNS(Prefix + "p" + strconv.FormatUint(podNSSeq.Add(1), 10)); err != nil {
			return nil, err
		}
		undo = append(undo, func() { k.logErr(sb.NS.Delete()) })
		sb.rt = runtimeConf(pod, sb.ContainerID, sb.NS.Name)
		ctx, cancel := context.WithTimeout(context.Background(), cniTimeout)
		res, aerr := k.cni.AddNetworkList(ctx, sb.list, sb.rt)
		cancel()
		// A failed ADD may have taken part of its resources: a runtime
		// always follows it with a DEL.
		undo = append(undo, func() { k.logErr(k.cniDel(sb)) })
		if aerr != nil {
			return nil, fmt.Errorf("CNI ADD %s: %w", sb.list.Name, aerr)
		}
		if sb.Result, err = types100.NewResultFromResult(res); err != nil {
			return nil, fmt.Errorf("CNI ADD result: %w", err)
		}
		if sb.IPs, err = resultIPs(sb.Result); err != nil {
			return nil, err
		}
		if fn := k.afterAdd.Load(); fn != nil {
			(*fn)(pod.Namespace, pod.Name, sb.IPs)
		}
	}
	if sb.workload, err = startWorkload(sb.NS, pod); err != nil {
		return nil, fmt.Errorf("start workload: %w", err)
	}
	k.log.Printf("pod %s/%s: sandbox %s up in %s, IPs %v", pod.Namespace, pod.Name, sb.NS.Name, time.Since(sb.Created).Round(time.Millisecond), sb.IPs)
	return sb, nil
}

// resultIPs returns the pod's addresses, IPv4 first, as kubelet reports them.
func resultIPs(r *types100.Result) ([]netip.Addr, error) {
	var v4, v6 []netip.Addr
	for _, ipc := range r.IPs {
		a, ok := netip.AddrFromSlice(ipc.Address.IP)
		if !ok {
			return nil, fmt.Errorf("CNI result has a bad address %v", ipc.Address)
		}
		if a = a.Unmap(); a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	if len(v4)+len(v6) == 0 {
		return nil, errors.New("CNI result has no IP address")
	}
	return append(v4, v6...), nil
}

// teardown stops the workload, runs CNI DEL and deletes the namespace. It
// goes on after a failure, so nothing is left behind, and returns every error.
func (k *Kubelet) teardown(sb *sandbox) error {
	var errs []error
	if sb.workload != nil {
		sb.workload.stop()
	}
	if !sb.hostNetwork {
		errs = append(errs, k.cniDel(sb), sb.NS.Delete())
	}
	err := errors.Join(errs...)
	if err != nil {
		err = fmt.Errorf("tear down pod %s/%s: %w", sb.Namespace, sb.Name, err)
	}
	k.log.Printf("pod %s/%s: sandbox %s down (err=%v)", sb.Namespace, sb.Name, sb.NS.Name, err)
	return err
}

func (k *Kubelet) cniDel(sb *sandbox) error {
	ctx, cancel := context.WithTimeout(context.Background(), cniTimeout)
	defer cancel()
	if err := k.cni.DelNetworkList(ctx, sb.list, sb.rt); err != nil {
		return fmt.Errorf("CNI DEL %s: %w", sb.list.Name, err)
	}
	return nil
}

func (k *Kubelet) logErr(err error) {
	if err != nil {
		k.log.Print(err)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}
