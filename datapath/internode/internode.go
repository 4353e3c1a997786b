// Package internode is the component that connects this node's pods to the
// rest of the cluster: routes to every other node's podCIDR (host-gw or
// vxlan, datapath/routes) and masquerade for pod traffic leaving the
// cluster CIDRs (datapath/iptables). Pod-to-pod traffic is never NATed.
package internode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/nodenet/nodenet/daemon/config"
	"github.com/nodenet/nodenet/daemon/nodeinfo"
	"github.com/nodenet/nodenet/daemon/view"
	"github.com/nodenet/nodenet/datapath/iptables"
	"github.com/nodenet/nodenet/datapath/routes"
)

// Options configure the component.
type Options struct {
	Node         string
	Addresses    []netip.Addr // override of the Node's InternalIPs
	Backend      routes.Backend
	VNI, Port    int
	ClusterCIDRs []netip.Prefix
	// IPTables has one manager per family the cluster uses.
	IPTables map[iptables.Family]*iptables.Manager
	Netlink  routes.Netlink
	Log      *slog.Logger
}

// Component programs routes and masquerade.
type Component struct {
	opts    Options
	view    *view.View
	applier *routes.Applier
	log     *slog.Logger

	mu        sync.Mutex // guards skipped, routed and addresses
	skipped   []string
	routed    int
	addresses []netip.Addr // node.addresses, applied live

}

// New registers the masquerade chains' owner on every manager.
func New(v *view.View, o Options) (*Component, error) {
	for fam, m := range o.IPTables {
		if err := m.Register(iptables.MasqOwner, iptables.MasqPrefixes()...); err != nil {
			return nil, fmt.Errorf("internode: iptables %v: %w", fam, err)
		}
	}
	log := o.Log.With("component", "routes")
	return &Component{opts: o, view: v, applier: routes.NewApplier(o.Netlink, log), log: log, addresses: o.Addresses}, nil
}

// Name implements the daemon's Component.
func (c *Component) Name() string { return "routes" }

// Watches implements the daemon's Component.
func (c *Component) Watches() []view.Kind { return []view.Kind{view.Nodes} }

// LiveKeys implements the daemon's Component.
func (c *Component) LiveKeys() []string { return []string{"node.addresses"} }

// Reconfigure implements the daemon's Component.
func (c *Component) Reconfigure(cfg *config.Config) error {
	var addrs []netip.Addr
	for _, s := range cfg.Node.Addresses {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("routes: node.addresses: %w", err)
		}
		addrs = append(addrs, a)
	}
	c.mu.Lock()
	c.addresses = addrs
	c.mu.Unlock()
	return nil
}

// Sync computes the routes to every other node and the masquerade rules and
// applies both; either failing fails the sync.
func (c *Component) Sync(ctx context.Context, full bool) error {
	desired, err := c.desired()
	if err != nil {
		return err
	}
	errs := []error{c.applier.Apply(desired)}
	for fam, m := range c.opts.IPTables {
		if err := m.Sync(ctx, iptables.MasqOwner, iptables.MasqueradeChains(fam, c.opts.ClusterCIDRs), full); err != nil {
			errs = append(errs, fmt.Errorf("masquerade: %w", err))
		}
	}
	return errors.Join(errs...)
}

func (c *Component) desired() (routes.Desired, error) {
	nodes, err := c.view.Nodes.List(labels.Everything())
	if err != nil {
		return routes.Desired{}, err
	}
	c.mu.Lock()
	selfAddrs := c.addresses
	c.mu.Unlock()
	var self *routes.Node
	var peers []routes.Node
	var skipped []string
	for _, n := range nodes {
		var override []netip.Addr
		if n.Name == c.opts.Node {
			override = selfAddrs
		}
		info, err := nodeinfo.Compute(n, override)
		if err != nil {
			if n.Name == c.opts.Node {
				return routes.Desired{}, fmt.Errorf("routes: %w", err)
			}
			skipped = append(skipped, err.Error())
			continue
		}
		rn := routes.Node{Name: n.Name, IP: info.Addresses[0], PodCIDRs: info.PodCIDRs}
		if n.Name == c.opts.Node {
			self = &rn
			continue
		}
		peers = append(peers, rn)
	}
	if self == nil {
		return routes.Desired{}, fmt.Errorf("routes: node %q is not registered", c.opts.Node)
	}
	d, err := routes.Compute(routes.Options{Backend: c.opts.Backend, Self: *self, VNI: c.opts.VNI, Port: c.opts.Port}, peers)
	if err != nil {
		return d, fmt.Errorf("routes: %w", err)
	}
	routed := len(peers) - len(d.Skipped)
	skipped = append(skipped, d.Skipped...)
	c.mu.Lock()
	if strings.Join(skipped, "\n") != strings.Join(c.skipped, "\n") {
		for _, s := range skipped {
			c.log.Warn("peer not routed", "reason", s)
		}
	}
	c.skipped, c.routed = skipped, routed
	c.mu.Unlock()
	return d, nil
}

// Details implements the daemon's status hook.
func (c *Component) Details() map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := map[string]string{"backend": string(c.opts.Backend), "peers routed": fmt.Sprint(c.routed)}
	if len(c.skipped) > 0 {
		d["not routed"] = strings.Join(c.skipped, "; ")
	}
	return d
}
