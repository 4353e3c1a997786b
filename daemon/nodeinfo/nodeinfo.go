// Package nodeinfo is the component that knows this node: its Node object's
// podCIDRs and the addresses nodenet uses for it (config override, else the
// Node's InternalIPs). Pod networking and the proxy read it through Current.
package nodeinfo

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/nodenet/nodenet/daemon/config"
	"github.com/nodenet/nodenet/daemon/view"
)

// Info is what is known about this node.
type Info struct {
	Name      string
	PodCIDRs  []netip.Prefix
	Addresses []netip.Addr
}

// Component keeps Info current.
type Component struct {
	view *view.View
	name string
	cur  atomic.Pointer[Info]
	// override is the config's node.addresses, applied live.
	override atomic.Pointer[[]netip.Addr]
}

// New returns the component for the node named in cfg.
func New(v *view.View, cfg *config.Config) *Component {
	c := &Component{view: v, name: cfg.Node.Name}
	c.setOverride(cfg)
	return c
}

func (c *Component) setOverride(cfg *config.Config) {
	var addrs []netip.Addr
	for _, s := range cfg.Node.Addresses {
		if a, err := netip.ParseAddr(s); err == nil {
			addrs = append(addrs, a)
		}
	}
	c.override.Store(&addrs)
}

// Name implements the daemon's Component.
func (c *Component) Name() string { return "node" }

// Watches implements the daemon's Component.
func (c *Component) Watches() []view.Kind { return []view.Kind{view.Nodes} }

// LiveKeys implements the daemon's Component.
func (c *Component) LiveKeys() []string { return []string{"node.addresses"} }

// Reconfigure implements the daemon's Component.
func (c *Component) Reconfigure(cfg *config.Config) error {
	c.setOverride(cfg)
	return nil
}

// Current returns the last computed Info, nil before the first good sync.
func (c *Component) Current() *Info { return c.cur.Load() }

// Sync reads the Node object and recomputes Info.
func (c *Component) Sync(_ context.Context, _ bool) error {
	node, err := c.view.Nodes.Get(c.name)
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("node %q is not registered with the API server (is [node] name right?)", c.name)
	}
	if err != nil {
		return fmt.Errorf("read node %q: %w", c.name, err)
	}
	info, err := Compute(node, *c.override.Load())
	if err != nil {
		return err
	}
	c.cur.Store(info)
	return nil
}

// Compute derives Info from the Node object and the address override.
func Compute(node *corev1.Node, override []netip.Addr) (*Info, error) {
	info := &Info{Name: node.Name}
	cidrs := node.Spec.PodCIDRs
	if len(cidrs) == 0 && node.Spec.PodCIDR != "" {
		cidrs = []string{node.Spec.PodCIDR}
	}
	for _, s := range cidrs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("node %q: bad podCIDR %q: %w", node.Name, s, err)
		}
		info.PodCIDRs = append(info.PodCIDRs, p.Masked())
	}
	if len(info.PodCIDRs) == 0 {
		return nil, fmt.Errorf("node %q has no spec.podCIDR yet (kube-controller-manager assigns it with --allocate-node-cidrs)", node.Name)
	}
	if len(override) > 0 {
		info.Addresses = slices.Clone(override)
	} else {
		for _, a := range node.Status.Addresses {
			if a.Type != corev1.NodeInternalIP {
				continue
			}
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				info.Addresses = append(info.Addresses, ip)
			}
		}
	}
	if len(info.Addresses) == 0 {
		return nil, fmt.Errorf("node %q has no InternalIP address and [node] addresses is empty", node.Name)
	}
	return info, nil
}

// Details implements the daemon's status hook.
func (c *Component) Details() map[string]string {
	info := c.Current()
	if info == nil {
		return nil
	}
	return map[string]string{
		"pod CIDRs": join(info.PodCIDRs),
		"addresses": join(info.Addresses),
	}
}

func join[T fmt.Stringer](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = x.String()
	}
	return strings.Join(s, ", ")
}
