// Package enforcer is the NetworkPolicy component: on any change of
// NetworkPolicies, Pods, Namespaces or Nodes it builds the policy model
// (package policy), renders this node's rules and IP sets, and applies them:
// sets first (so new rules never reference a missing set), then the chains
// through the shared iptables Manager, then stale sets are removed.
package enforcer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/nodenet/nodenet/daemon/config"
	"github.com/nodenet/nodenet/daemon/view"
	"github.com/nodenet/nodenet/datapath/ipset"
	"github.com/nodenet/nodenet/datapath/iptables"
	"github.com/nodenet/nodenet/policy"
)

// Options configure the component.
type Options struct {
	Node     string
	IPTables map[iptables.Family]*iptables.Manager
	IPSet    ipset.Runner // nil: the ipset binary
	// LocalAddrs returns the addresses IPAM leased to this node's pods by
	// "namespace/name": a new pod is enforced from its CNI ADD on, before
	// the kubelet reports its IP in the Pod status.
	LocalAddrs func() map[string][]netip.Addr
	// SaveCounters returns `iptables-save -c -t filter` of a family, for
	// the exact count of denied packets (nil: not counted).
	SaveCounters func(ctx context.Context, fam iptables.Family) ([]byte, error)
	Log          *slog.Logger
	// LogDenied adds a rate-limited NFLOG rule before each pod chain's
	// DROP (policy.RuleOptions): at most LogRate ("10/minute") with
	// LogBurst per pod and direction, to NFLOGGroup.
	LogDenied  bool
	LogRate    string
	LogBurst   int
	NFLOGGroup uint16
}

// Component enforces NetworkPolicies for this node's pods.
type Component struct {
	opts Options
	view *view.View
	log  *slog.Logger

	// requested counts Admit's sync requests; a sync covers those made
	// before it started.
	requested atomic.Uint64

	mu       sync.Mutex // guards the fields below
	model    *policy.Model
	policies int
	trigger  func()
	applied  uint64        // requests covered by the latest successful sync
	synced   chan struct{} // closed and replaced after each successful sync
	syncErr  error         // of the latest sync
}

// New registers the policy chains with every manager.
func New(v *view.View, o Options) (*Component, error) {
	for fam, m := range o.IPTables {
		if err := m.Register(policy.Owner, policy.Prefixes()...); err != nil {
			return nil, fmt.Errorf("policy: iptables %v: %w", fam, err)
		}
	}
	if o.IPSet == nil {
		o.IPSet = ipset.ExecRunner{}
	}
	return &Component{opts: o, view: v, log: o.Log.With("component", "policy"), synced: make(chan struct{})}, nil
}

// Name implements the daemon's Component.
func (c *Component) Name() string { return "policy" }

// Watches implements the daemon's Component.
func (c *Component) Watches() []view.Kind {
	return []view.Kind{view.NetworkPolicies, view.Pods, view.Namespaces}
}

// LiveKeys implements the daemon's Component.
func (c *Component) LiveKeys() []string { return nil }

// Reconfigure implements the daemon's Component.
func (c *Component) Reconfigure(*config.Config) error { return nil }

// Sync recomputes and applies everything.
func (c *Component) Sync(ctx context.Context, full bool) (err error) {
	gen := c.syncStarted()
	defer func() { c.syncEnded(gen, err) }()
	m, n, err := c.build()
	if err != nil {
		return err
	}
	var sets []ipset.Set
	chains := map[iptables.Family][]iptables.Chain{}
	for fam := range c.opts.IPTables {
		// No NodeIPs: every local address (the bridge's gateway included,
		// the source of the node's probes to its pods) is exempt.
		rs := m.Rules(policy.RuleOptions{Family: fam, Node: c.opts.Node,
			LogDenied: c.opts.LogDenied, LogRate: c.opts.LogRate, LogBurst: c.opts.LogBurst, LogGroup: c.opts.NFLOGGroup})
		for _, s := range rs.Sets {
			sets = append(sets, ipset.Set{Name: s.Name, Type: s.Type, Family: s.Family, Members: s.Members})
		}
		chains[fam] = rs.Filter
	}
	if err := ipset.Apply(ctx, c.opts.IPSet, sets); err != nil {
		return fmt.Errorf("policy: sets: %w", err)
	}
	var errs []error
	for fam, mgr := range c.opts.IPTables {
		if err := mgr.Sync(ctx, policy.Owner, chains[fam], full); err != nil {
			errs = append(errs, fmt.Errorf("policy: %v rules: %w", fam, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := ipset.Prune(ctx, c.opts.IPSet, policy.SetPrefix, sets); err != nil {
		return fmt.Errorf("policy: remove stale sets: %w", err)
	}
	c.mu.Lock()
	c.model, c.policies = m, n
	c.mu.Unlock()
	return nil
}

func (c *Component) build() (*policy.Model, int, error) {
	nps, err := c.view.NetworkPolicies.List(labels.Everything())
	if err != nil {
		return nil, 0, err
	}
	corePods, err := c.view.Pods.List(labels.Everything())
	if err != nil {
		return nil, 0, err
	}
	coreNS, err := c.view.Namespaces.List(labels.Everything())
	if err != nil {
		return nil, 0, err
	}
	local := c.localAddrs()
	var pods []policy.Pod
	for _, p := range corePods {
		pp, ok := policy.PodFromCore(p)
		if p.Spec.NodeName == c.opts.Node && !pp.HostNetwork && !finished(p) {
			// Our CNI ADDs' addresses count from the ADD on, before the
			// kubelet reports them (a new pod, or a new sandbox of one).
			for _, a := range local[p.Namespace+"/"+p.Name] {
				if !slices.Contains(pp.IPs, a) {
					pp.IPs = append(pp.IPs, a)
				}
			}
			ok = len(pp.IPs) > 0
		}
		if ok {
			pods = append(pods, pp)
		}
	}
	var nss []policy.Namespace
	for _, ns := range coreNS {
		nss = append(nss, policy.Namespace{Name: ns.Name, Labels: ns.Labels})
	}
	return policy.Build(nps, pods, nss), len(nps), nil
}

func finished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// Model is the last applied model, for diagnosis; nil before the first sync.
func (c *Component) Model() *policy.Model {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.model
}

// Details implements the daemon's status hook: the policies, and which of
// this node's pods they isolate.
func (c *Component) Details() map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := map[string]string{"policies": fmt.Sprint(c.policies)}
	if c.model == nil {
		return d
	}
	local := 0
	for _, iso := range c.model.Isolated() {
		if iso.Node != c.opts.Node {
			continue
		}
		local++
		var dirs []string
		if len(iso.Ingress) > 0 {
			dirs = append(dirs, "ingress by "+strings.Join(iso.Ingress, ","))
		}
		if len(iso.Egress) > 0 {
			dirs = append(dirs, "egress by "+strings.Join(iso.Egress, ","))
		}
		d["isolated "+iso.Pod] = strings.Join(dirs, "; ")
	}
	d["isolated pods on this node"] = fmt.Sprint(local)
	return d
}
