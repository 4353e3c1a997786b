// Package pods is the pod network of one node: the CNI backend (ADD, DEL,
// CHECK, GC, STATUS as forwarded by the plugin process) and the component
// that keeps the bridge, the IPAM ranges and the conflist in line with the
// Node object, and frees what deleted pods left behind.
//
// Order at start: the component's first sync opens IPAM on the node's
// podCIDRs, sets up the bridge, and only then installs the conflist, so the
// runtime never calls a plugin whose daemon cannot serve it.
package pods

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync"
	"time"

	"github.com/nodenet/nodenet/daemon/config"
	"github.com/nodenet/nodenet/daemon/nodeinfo"
	"github.com/nodenet/nodenet/daemon/view"
	"github.com/nodenet/nodenet/datapath/cni"
	"github.com/nodenet/nodenet/datapath/ipam"
	"github.com/nodenet/nodenet/datapath/podnet"
)

// Options configure the pod network.
type Options struct {
	Node        string
	Bridge      string
	StateDir    string         // IPAM lives in StateDir/ipam
	ConfPath    string         // where the conflist goes
	NetworkName string         // CNI network name
	Socket      string         // control socket, written into the conflist
	Chain       []string       // chained plugin configs
	PodCIDRs    []netip.Prefix // override of the Node's podCIDRs
	// MTU of pod interfaces; 0 detects it: the MTU of the underlay link
	// holding the node address, less the backend's Overhead.
	MTU      int
	Overhead func(underlayIsV6 bool) int
	// GCGrace: an address whose pod is not in the view is freed only once
	// it is this old, so a pod the informer has not delivered yet is safe.
	GCGrace time.Duration
	Log     *slog.Logger
}

// AdmitFunc returns once a pod whose interface an ADD just set up may be
// reported ready (the NetworkPolicy enforcer's Admit); an error fails the
// ADD, and the runtime retries.
type AdmitFunc func(ctx context.Context, namespace, name string) error

// Manager is the pod network: component and CNI backend.
type Manager struct {
	opts  Options
	view  *view.View
	log   *slog.Logger
	locks keyedMutex // one in-flight request per container

	mu      sync.RWMutex // guards the fields below
	alloc   *ipam.Allocator
	mtu     int
	ready   bool // bridge and IPAM set up; conflist installed
	readyAt time.Time
	admit   AdmitFunc
}

// New returns the manager; nothing happens until the first Sync.
func New(v *view.View, o Options) *Manager {
	if o.GCGrace == 0 {
		o.GCGrace = time.Minute
	}
	return &Manager{opts: o, view: v, log: o.Log.With("component", "pods")}
}

// Name implements the daemon's Component.
func (m *Manager) Name() string { return "pods" }

// Watches implements the daemon's Component: podCIDRs come from the Node,
// and leaked addresses are found against the Pods.
func (m *Manager) Watches() []view.Kind { return []view.Kind{view.Nodes, view.Pods} }

// LiveKeys implements the daemon's Component; everything here needs a restart.
func (m *Manager) LiveKeys() []string { return nil }

// Reconfigure implements the daemon's Component.
func (m *Manager) Reconfigure(*config.Config) error { return nil }

// Sync sets up bridge, IPAM and conflist, then frees leaked addresses.
func (m *Manager) Sync(ctx context.Context, full bool) error {
	node, err := m.view.Nodes.Get(m.opts.Node)
	if err != nil {
		return fmt.Errorf("pods: read node %s: %w", m.opts.Node, err)
	}
	info, err := nodeinfo.Compute(node, nil)
	if err != nil {
		return fmt.Errorf("pods: %w", err)
	}
	ranges := info.PodCIDRs
	if len(m.opts.PodCIDRs) > 0 {
		ranges = m.opts.PodCIDRs
	}
	if err := m.ensureIPAM(ranges); err != nil {
		return err
	}
	mtu, err := m.podMTU(info.Addresses)
	if err != nil {
		return err
	}
	m.mu.RLock()
	gateways := m.alloc.Gateways()
	m.mu.RUnlock()
	if err := podnet.EnsureBridge(podnet.Bridge{Name: m.opts.Bridge, Gateways: gateways, MTU: mtu}); err != nil {
		return fmt.Errorf("pods: bridge %s: %w", m.opts.Bridge, err)
	}
	if err := enableForwarding(gateways); err != nil {
		return fmt.Errorf("pods: %w", err)
	}
	m.mu.Lock()
	m.mtu = mtu
	m.mu.Unlock()
	if err := m.installConflist(); err != nil {
		return err
	}
	return m.collectLeaks()
}

func (m *Manager) ensureIPAM(ranges []netip.Prefix) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.alloc == nil {
		a, err := ipam.Open(filepath.Join(m.opts.StateDir, "ipam"), ranges, ipam.Options{Node: m.opts.Node, Logger: m.log})
		if err != nil {
			return fmt.Errorf("pods: open IPAM: %w", err)
		}
		m.alloc = a
		return nil
	}
	if !samePrefixes(m.alloc.Ranges(), ranges) {
		m.log.Info("pod ranges changed", "from", m.alloc.Ranges(), "to", ranges)
		if err := m.alloc.SetRanges(ranges); err != nil {
			return fmt.Errorf("pods: set IPAM ranges: %w", err)
		}
	}
	return nil
}

func (m *Manager) installConflist() error {
	content, err := cni.Conflist(cni.ConflistOptions{Name: m.opts.NetworkName, Socket: m.opts.Socket, Chain: m.opts.Chain})
	if err != nil {
		return fmt.Errorf("pods: render conflist: %w", err)
	}
	wrote, err := cni.WriteConflist(m.opts.ConfPath, content)
	if err != nil {
		return fmt.Errorf("pods: %w", err)
	}
	if wrote {
		m.log.Info("installed CNI config", "path", m.opts.ConfPath)
	}
	m.mu.Lock()
	if !m.ready {
		m.ready, m.readyAt = true, time.Now()
	}
	m.mu.Unlock()
	return nil
}

// Details implements the daemon's status hook.
func (m *Manager) Details() map[string]string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.alloc == nil {
		return nil
	}
	d := map[string]string{"bridge": m.opts.Bridge, "mtu": fmt.Sprint(m.mtu), "conflist": m.opts.ConfPath}
	for _, u := range m.alloc.Usage() {
		key := "ipam " + u.Range.String()
		if u.Stale {
			key += " (stale)"
		}
		d[key] = fmt.Sprintf("%d used, %d free", u.Used, u.Free)
	}
	return d
}

// SetAdmit installs the gate every ADD passes before it answers.
func (m *Manager) SetAdmit(f AdmitFunc) {
	m.mu.Lock()
	m.admit = f
	m.mu.Unlock()
}

// PodAddrs returns the addresses leased to this node's pods by
// "namespace/name" (nil before IPAM is set up).
func (m *Manager) PodAddrs() map[string][]netip.Addr {
	alloc := m.Allocator()
	if alloc == nil {
		return nil
	}
	out := map[string][]netip.Addr{}
	for _, a := range alloc.List() {
		if a.Namespace == "" || a.Pod == "" {
			continue
		}
		k := a.Namespace + "/" + a.Pod
		for _, p := range a.Addrs {
			out[k] = append(out[k], p.Addr())
		}
	}
	return out
}

// Allocator exposes IPAM (nil before the first sync), for metrics.
func (m *Manager) Allocator() *ipam.Allocator {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.alloc
}

func samePrefixes(a, b []netip.Prefix) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// keyedMutex serialises requests for one container: a runtime may send DEL
// while its ADD is still running.
type keyedMutex struct {
	mu    sync.Mutex // guards locks
	locks map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) func() {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyedEntry{}
	}
	e := k.locks[key]
	if e == nil {
		e = &keyedEntry{}
		k.locks[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}
